//! Why something failed, as one fixed, low-cardinality label value: the `kind` of
//! `kiro_exporter_refresh_failures_total` and `kiro_exporter_sink_errors_total`. Errors map
//! themselves to a kind; code that decides by kind matches this enum, never a string.

/// What kind of failure an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureKind {
    /// The export (or the month asked for) has no data.
    NoData,
    /// Reading or writing a file or an object store failed.
    Io,
    /// A file is not what the export should hold (schema, manifest, format).
    BadInput,
    /// The query engine failed.
    Engine,
    /// A result could not be decoded.
    Decode,
    /// The allocation does not sum to the bill.
    Reconciliation,
    /// Something took longer than allowed.
    Timeout,
    /// An AWS call failed.
    Aws,
    /// The settings cannot work (e.g. no AWS region).
    Config,
    /// The exposition could not be encoded.
    Encode,
    /// A notification was not delivered.
    Delivery,
    /// The state file could not be written.
    State,
}

impl FailureKind {
    /// Every kind a refresh can fail with; its counters exist at 0 from the start.
    pub const REFRESH: [Self; 10] = [
        Self::NoData,
        Self::Io,
        Self::BadInput,
        Self::Engine,
        Self::Decode,
        Self::Reconciliation,
        Self::Timeout,
        Self::Aws,
        Self::Config,
        Self::Encode,
    ];

    /// Every kind.
    pub const ALL: [Self; 12] = [
        Self::NoData,
        Self::Io,
        Self::BadInput,
        Self::Engine,
        Self::Decode,
        Self::Reconciliation,
        Self::Timeout,
        Self::Aws,
        Self::Config,
        Self::Encode,
        Self::Delivery,
        Self::State,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoData => "no_data",
            Self::Io => "io",
            Self::BadInput => "bad_input",
            Self::Engine => "engine",
            Self::Decode => "decode",
            Self::Reconciliation => "reconciliation",
            Self::Timeout => "timeout",
            Self::Aws => "aws",
            Self::Config => "config",
            Self::Encode => "encode",
            Self::Delivery => "delivery",
            Self::State => "state",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once_with_its_own_label() {
        let labels: std::collections::BTreeSet<&str> =
            FailureKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), FailureKind::ALL.len());
        assert!(
            FailureKind::REFRESH
                .iter()
                .all(|k| FailureKind::ALL.contains(k))
        );
    }
}
