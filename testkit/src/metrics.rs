//! Reading a Prometheus text page in tests: the value of one series, named with its
//! labels in any order (the encoder sorts them by name; a test need not).

/// A series as written in the text format (`name{a="x",b="y"}`), with its labels in
/// a canonical order.
fn series_key(series: &str) -> (String, Vec<(String, String)>) {
    let Some((name, labels)) = series.split_once('{') else {
        return (series.to_string(), Vec::new());
    };
    let mut pairs: Vec<(String, String)> = labels
        .trim_end_matches('}')
        .split("\",")
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (label, value) = pair.split_once('=')?;
            Some((label.to_string(), value.trim_matches('"').to_string()))
        })
        .collect();
    pairs.sort();
    (name.to_string(), pairs)
}

/// The value of `series` (name and every label, in any order) on a metrics page.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    let wanted = series_key(series);
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (written, value) = line.rsplit_once(' ')?;
            (series_key(written) == wanted)
                .then(|| value.parse().ok())
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_series_is_found_whatever_the_order_of_its_labels() {
        let page =
            "# HELP x_total X.\nx_total{a=\"1\",b=\"2\"} 3\nx_total{a=\"1\",b=\"9\"} 4\ny 5\n";
        assert_eq!(super::sample(page, "x_total{b=\"2\",a=\"1\"}"), Some(3.0));
        assert_eq!(super::sample(page, "y"), Some(5.0));
        assert_eq!(super::sample(page, "x_total{a=\"2\"}"), None);
    }
}
