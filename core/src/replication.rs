//! Logical replication, as the audit trail needs to know it.

/// The subscription OID in a logical replication worker's registered name
/// (`bgw_name`). Postgres names them, by version:
/// - 15: `logical replication worker for subscription 16400` (and `... sync 16390`);
/// - 16+: `logical replication apply worker for subscription 16400`,
///   `... parallel apply worker for subscription 16400`,
///   `... tablesync worker for subscription 16400 sync 16390`.
pub fn subscription_of_worker(bgw_name: &str) -> Option<u32> {
    if !bgw_name.starts_with("logical replication ") {
        return None;
    }
    let rest = bgw_name.split_once(" for subscription ")?.1;
    let digits: &str = rest.split(' ').next()?;
    digits.parse().ok()
}

/// Whether a background worker function of the `postgres` library is one
/// that applies a subscription's changes (or copies its tables).
pub fn is_apply_function(library: &str, function: &str) -> bool {
    library == "postgres"
        && matches!(
            function,
            "ApplyWorkerMain" | "TablesyncWorkerMain" | "ParallelApplyWorkerMain"
        )
}

/// The actor recorded for rows a subscription's worker wrote.
pub fn replicated_actor(subscription: &str) -> String {
    format!("replicated from subscription {subscription}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_names_by_version() {
        assert_eq!(
            subscription_of_worker("logical replication worker for subscription 16400"),
            Some(16400)
        );
        assert_eq!(
            subscription_of_worker("logical replication worker for subscription 16400 sync 16390"),
            Some(16400)
        );
        assert_eq!(
            subscription_of_worker("logical replication apply worker for subscription 7"),
            Some(7)
        );
        assert_eq!(
            subscription_of_worker(
                "logical replication tablesync worker for subscription 42 sync 43"
            ),
            Some(42)
        );
        assert_eq!(
            subscription_of_worker("logical replication parallel apply worker for subscription 9"),
            Some(9)
        );
        assert_eq!(subscription_of_worker("tenantguard audit writer"), None);
        assert_eq!(subscription_of_worker("logical replication launcher"), None);
        assert_eq!(
            subscription_of_worker("logical replication worker for subscription x"),
            None
        );
    }

    #[test]
    fn apply_functions() {
        assert!(is_apply_function("postgres", "ApplyWorkerMain"));
        assert!(is_apply_function("postgres", "TablesyncWorkerMain"));
        assert!(!is_apply_function("postgres", "ApplyLauncherMain"));
        assert!(!is_apply_function("pg_tenantguard", "ApplyWorkerMain"));
    }
}
