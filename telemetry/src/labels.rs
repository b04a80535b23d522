//! Label values that stay bounded. Prometheus keeps one series per distinct label set,
//! so a label fed from outside (a project, a user, a tool name, a failure reason) could
//! grow without end. [`BoundedLabel`] admits the first `limit` distinct values it sees
//! and maps every later newcomer to [`OVERFLOW`]; values that are empty, too long or
//! not printable ASCII are mapped too. A job id is never a label: nothing here takes one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The value a label takes once its set of distinct values is full.
pub const OVERFLOW: &str = "other";
/// The value of a label whose input was empty.
pub const UNKNOWN: &str = "unknown";
/// The longest label value admitted as is.
pub const MAX_VALUE_LEN: usize = 64;

/// A label whose distinct values are capped. Cloning shares the set of admitted values.
#[derive(Clone, Debug)]
pub struct BoundedLabel {
    admitted: Arc<Mutex<HashSet<String>>>,
    limit: usize,
}

impl BoundedLabel {
    /// A label that admits at most `limit` distinct values besides [`OVERFLOW`] and
    /// [`UNKNOWN`].
    pub fn new(limit: usize) -> Self {
        BoundedLabel {
            admitted: Arc::new(Mutex::new(HashSet::new())),
            limit,
        }
    }

    /// The label value to use for `raw`.
    pub fn value(&self, raw: &str) -> String {
        if raw.is_empty() {
            return UNKNOWN.to_string();
        }
        if raw.len() > MAX_VALUE_LEN || !raw.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return OVERFLOW.to_string();
        }
        // A poisoned lock only means another thread panicked while inserting; the set
        // is still a valid set.
        let mut admitted = self
            .admitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if admitted.contains(raw) {
            return raw.to_string();
        }
        if admitted.len() < self.limit {
            admitted.insert(raw.to_string());
            return raw.to_string();
        }
        OVERFLOW.to_string()
    }
}

/// The HTTP method as a label: the usual ones as they are, anything else [`OVERFLOW`].
pub fn http_method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => OVERFLOW,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_label_maps_newcomers_to_other() {
        let label = BoundedLabel::new(2);
        assert_eq!(label.value("a"), "a");
        assert_eq!(label.value("b"), "b");
        assert_eq!(label.value("c"), OVERFLOW);
        assert_eq!(label.value("a"), "a", "admitted values stay admitted");
    }

    #[test]
    fn odd_values_are_never_admitted() {
        let label = BoundedLabel::new(10);
        assert_eq!(label.value(""), UNKNOWN);
        assert_eq!(label.value(&"x".repeat(MAX_VALUE_LEN + 1)), OVERFLOW);
        assert_eq!(label.value("line\nbreak"), OVERFLOW);
        assert_eq!(label.value("naïve"), OVERFLOW);
    }

    #[test]
    fn clones_share_their_admitted_values() {
        let label = BoundedLabel::new(1);
        let clone = label.clone();
        assert_eq!(label.value("a"), "a");
        assert_eq!(clone.value("b"), OVERFLOW);
    }
}
