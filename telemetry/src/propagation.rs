//! W3C trace context in NATS headers, so that one trace follows a job from the HTTP
//! submission through the jobs stream to the node, and through the events stream back
//! to the client's WebSocket. A publisher calls [`inject`] on the message's headers
//! inside the span that publishes; a receiver makes the span that handles the message
//! a child of the publisher's with [`set_parent`] (or [`extract`] for the raw
//! OpenTelemetry context). Only the `traceparent` and `tracestate` headers are used;
//! JetStream stores them with the message, so a job claimed an hour later still joins
//! its submission's trace.
//!
//! Without a tracing subscriber that has the OpenTelemetry layer (see
//! [`crate::tracing_setup`]), [`inject`] writes nothing and [`extract`] returns an
//! empty context: both are always safe to call.

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header that carries trace and parent span ids.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header that carries vendor trace state.
pub const TRACESTATE: &str = "tracestate";

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Parsed rather than converted: async-nats panics on a bad name or value, and
        // a trace state read from a remote message is outside input.
        if let (Ok(name), Ok(value)) = (key.parse::<HeaderName>(), value.parse::<HeaderValue>()) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(|(name, _)| AsRef::<str>::as_ref(name))
            .collect()
    }
}

/// Writes the current span's trace context into `headers`.
pub fn inject(headers: &mut HeaderMap) {
    inject_context(&tracing::Span::current().context(), headers);
}

/// Writes `context`'s trace context into `headers`.
pub fn inject_context(context: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
}

/// Headers holding only the current span's trace context, for a publish that had
/// none: `client.publish_with_headers(subject, headers(), payload)`, or
/// `PublishMessage::build().headers(headers())` *before* `.message_id(…)` and the
/// other header setters (`headers` replaces the whole map).
pub fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    inject(&mut headers);
    headers
}

/// The remote trace context carried by `headers`; an empty context when they carry
/// none or a malformed one.
pub fn extract(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Makes `span` a child of the span that published the message with `headers`.
/// Call it right after creating `span`, before entering it or logging in it: a span's
/// parent cannot change once it has started. Returns whether a remote parent was set.
pub fn set_parent(span: &tracing::Span, headers: Option<&HeaderMap>) -> bool {
    let Some(headers) = headers else {
        return false;
    };
    let context = extract(headers);
    if !context.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(context).is_ok()
}

/// A span made by `make` as a child of the span that published the message with
/// `headers`, but only when that parent was sampled: otherwise (no trace context, a
/// malformed one, or a parent the sampler dropped) `make` is not called and the
/// span is [`tracing::Span::none`], so a reader that opens a span per message pays
/// nothing for the messages nobody traces. `make` should give its span `parent: None`
/// so that it does not also hang below whatever span is current.
pub fn sampled_child(
    headers: Option<&HeaderMap>,
    make: impl FnOnce() -> tracing::Span,
) -> tracing::Span {
    let Some(headers) = headers else {
        return tracing::Span::none();
    };
    if headers.get(TRACEPARENT).is_none() {
        return tracing::Span::none();
    }
    let context = extract(headers);
    let sampled = {
        let span = context.span();
        let span_context = span.span_context();
        span_context.is_valid() && span_context.is_sampled()
    };
    if !sampled {
        return tracing::Span::none();
    }
    let span = make();
    if span.is_disabled() || span.set_parent(context).is_err() {
        return tracing::Span::none();
    }
    span
}

/// The trace id of the current span, as 32 hex digits, when there is one: to show
/// a user or to put in an error body, so that a report leads to the trace.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_header_reads_back_as_a_remote_context() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let context = extract(&headers);
        let span = context.span();
        let remote = span.span_context();
        assert!(remote.is_valid());
        assert!(remote.is_remote());
        assert_eq!(
            remote.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(remote.span_id().to_string(), "00f067aa0ba902b7");

        let mut copy = HeaderMap::new();
        inject_context(&context, &mut copy);
        assert_eq!(
            copy.get(TRACEPARENT).map(|v| v.as_str()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }

    #[test]
    fn garbage_headers_give_an_empty_context() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, "not a trace");
        assert!(!extract(&headers).span().span_context().is_valid());
        assert!(!set_parent(&tracing::Span::none(), Some(&headers)));
        assert!(!set_parent(&tracing::Span::none(), None));
    }

    #[test]
    fn only_a_sampled_parent_gets_a_child_span() {
        let (dispatch, _guard) = crate::TracingSetup::new("propagation-test")
            .filter("info")
            .dispatch(std::io::sink)
            .expect("a tracing setup without an exporter");
        tracing::dispatcher::with_default(&dispatch, || {
            let with = |traceparent: &str| {
                let mut headers = HeaderMap::new();
                headers.insert(TRACEPARENT, traceparent);
                headers
            };
            let sampled = with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
            let child = sampled_child(
                Some(&sampled),
                || tracing::info_span!(parent: None, "ws.deliver"),
            );
            assert!(!child.is_none());
            let context = child.context();
            let span = context.span();
            assert_eq!(
                span.span_context().trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );

            let mut made = 0;
            let dropped = with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
            for headers in [Some(&dropped), Some(&HeaderMap::new()), None] {
                let child = sampled_child(headers, || {
                    made += 1;
                    tracing::info_span!(parent: None, "ws.deliver")
                });
                assert!(child.is_none());
            }
            assert_eq!(made, 0, "no span is made for an unsampled parent");
        });
    }

    #[test]
    fn without_a_subscriber_nothing_is_injected() {
        let mut headers = HeaderMap::new();
        inject(&mut headers);
        assert!(headers.get(TRACEPARENT).is_none());
        assert_eq!(current_trace_id(), None);
    }
}
