//! Log lines that carry the trace: an event logged inside a span gets the span's
//! OpenTelemetry trace id and span id, so a log line leads to its trace and a trace to
//! its logs. Text lines end with ` trace_id=… span_id=…`; JSON lines get `trace_id`
//! and `span_id` keys first. The wrapped formatter writes everything else as usual.

use std::sync::{Arc, OnceLock};
use tracing::dispatcher::WeakDispatch;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The dispatcher the formatter belongs to, set once it exists. The OpenTelemetry
/// context of a span is reached through its dispatcher, and while an event is being
/// formatted `tracing` hands out no default dispatcher (it guards against re-entry),
/// so the formatter keeps its own (weak: the dispatcher owns the formatter).
pub(crate) type DispatchCell = Arc<OnceLock<WeakDispatch>>;

/// Wraps an event formatter to add the trace and span ids.
#[derive(Debug)]
pub(crate) struct WithTraceIds<F> {
    inner: F,
    json: bool,
    dispatch: DispatchCell,
}

impl<F> WithTraceIds<F> {
    pub(crate) fn new(inner: F, json: bool, dispatch: DispatchCell) -> Self {
        WithTraceIds {
            inner,
            json,
            dispatch,
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let ids = ctx
            .parent_span()
            .and_then(|span| otel_ids(&self.dispatch, &span.id()));
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let Some((trace_id, span_id)) = ids else {
            return writer.write_str(&line);
        };
        if self.json {
            match line.strip_prefix('{') {
                Some(rest) => {
                    let separator = if rest.starts_with('}') { "" } else { "," };
                    write!(
                        writer,
                        "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"{separator}{rest}"
                    )
                }
                None => writer.write_str(&line),
            }
        } else {
            let text = line.trim_end_matches('\n');
            writeln!(writer, "{text} trace_id={trace_id} span_id={span_id}")
        }
    }
}

/// The OpenTelemetry trace and span ids of span `id`, if the OpenTelemetry layer
/// tracks it.
fn otel_ids(dispatch: &DispatchCell, id: &tracing::span::Id) -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    let dispatch = dispatch.get()?.upgrade()?;
    let context = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}
