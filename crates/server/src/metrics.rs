//! Prometheus text metrics of the API server: requests and latency per action
//! and result code.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default, Clone)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

/// Request metrics.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String), Series>>,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, action: &str, code: &str, elapsed: Duration) {
        // Only actions gpucloud serves become series: the name comes from the
        // caller, and an arbitrary one would add a series per request (and
        // could forge exposition lines).
        let action = if crate::api::dispatch::ACTIONS
            .iter()
            .any(|(_, _, a)| *a == action)
        {
            action
        } else {
            "Unknown"
        };
        let code = if code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
            code
        } else {
            "Unknown"
        };
        let secs = elapsed.as_secs_f64();
        let mut m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.entry((action.to_string(), code.to_string())).or_default();
        s.count += 1;
        s.sum += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.buckets[i] += 1;
            }
        }
    }

    /// Prometheus exposition text.
    pub fn render(&self) -> String {
        let m = self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = String::new();
        out.push_str(
            "# HELP gpucloud_api_requests_total API requests by action and result code.\n",
        );
        out.push_str("# TYPE gpucloud_api_requests_total counter\n");
        for ((a, c), s) in &m {
            out.push_str(&format!(
                "gpucloud_api_requests_total{{action=\"{a}\",code=\"{c}\"}} {}\n",
                s.count
            ));
        }
        out.push_str("# HELP gpucloud_api_request_seconds API request latency.\n");
        out.push_str("# TYPE gpucloud_api_request_seconds histogram\n");
        let mut by_action: BTreeMap<&str, Series> = BTreeMap::new();
        for ((a, _), s) in &m {
            let e = by_action.entry(a.as_str()).or_default();
            e.count += s.count;
            e.sum += s.sum;
            for i in 0..BUCKETS.len() {
                e.buckets[i] += s.buckets[i];
            }
        }
        for (a, s) in by_action {
            for (i, b) in BUCKETS.iter().enumerate() {
                out.push_str(&format!(
                    "gpucloud_api_request_seconds_bucket{{action=\"{a}\",le=\"{b}\"}} {}\n",
                    s.buckets[i]
                ));
            }
            out.push_str(&format!(
                "gpucloud_api_request_seconds_bucket{{action=\"{a}\",le=\"+Inf\"}} {}\n",
                s.count
            ));
            out.push_str(&format!(
                "gpucloud_api_request_seconds_sum{{action=\"{a}\"}} {}\n",
                s.sum
            ));
            out.push_str(&format!(
                "gpucloud_api_request_seconds_count{{action=\"{a}\"}} {}\n",
                s.count
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_chosen_names_do_not_become_series() {
        let m = Metrics::default();
        m.observe("RunInstances", "Success", Duration::from_millis(3));
        m.observe("Evil\"} 1\nforged", "x\ny", Duration::from_millis(3));
        m.observe("Bogus12345", "InvalidAction", Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("action=\"RunInstances\""));
        assert!(
            !text.contains("forged") && !text.contains("Bogus12345"),
            "{text}"
        );
        assert!(
            text.contains("action=\"Unknown\",code=\"Unknown\""),
            "{text}"
        );
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.observe("RunInstances", "Success", Duration::from_millis(3));
        m.observe(
            "RunInstances",
            "ResourceInsufficient.SpecifiedInstanceType",
            Duration::from_millis(2),
        );
        let t = m.render();
        assert!(
            t.contains("gpucloud_api_requests_total{action=\"RunInstances\",code=\"Success\"} 1")
        );
        assert!(t.contains("gpucloud_api_request_seconds_count{action=\"RunInstances\"} 2"));
        assert!(t.contains("le=\"0.005\"} 2"));
    }
}
