//! Requests to etcd with a deadline, errors mapped to port errors, and JSON
//! values.

use crate::error::{is_lease_not_found, session_lost, timed_out, transient};
use etcd_client::{Client, GetOptions, KeyValue, SortOrder, SortTarget, Txn, TxnResponse};
use recon_core::ports::PortError;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Entries per page when a prefix is listed: a page of done-records (about
/// 1.3 KB each) stays far below the 4 MiB a gRPC answer may carry.
const LIST_PAGE: i64 = 500;

/// A handle for one member's requests. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Kv {
    pub(crate) client: Client,
    pub(crate) request_timeout: Duration,
    /// The member's session: cancelled here when etcd reports its lease gone.
    pub(crate) session: CancellationToken,
    pub(crate) member: String,
}

impl Kv {
    /// Runs one request under the deadline and maps its failure.
    pub(crate) async fn call<T>(
        &self,
        operation: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, PortError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Err(_elapsed) => Err(timed_out(operation)),
            Ok(Err(error)) => Err(self.map_error(operation, error)),
            Ok(Ok(value)) => Ok(value),
        }
    }

    /// An etcd failure as a port error: `SessionLost` (and the session
    /// cancelled) if etcd says the member's lease is gone, else `Transient`.
    pub(crate) fn map_error(&self, operation: &str, error: etcd_client::Error) -> PortError {
        if is_lease_not_found(&error) {
            self.session.cancel();
            return session_lost(&self.member);
        }
        transient(operation, error)
    }

    /// The key's current entry, if any.
    pub(crate) async fn get(&self, key: &str) -> Result<Option<KeyValue>, PortError> {
        let mut client = self.client.clone();
        let mut response = self.call("get", client.get(key, None)).await?;
        Ok(response.take_kvs().into_iter().next())
    }

    /// Every entry under `prefix`, in key order, read in pages of
    /// [`LIST_PAGE`] entries at one revision (a consistent snapshot however
    /// many pages it takes).
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<KeyValue>, PortError> {
        self.list_pages("list", prefix, GetOptions::new()).await
    }

    /// The keys under `prefix`, in key order (no values), paged as
    /// [`Kv::list`].
    pub(crate) async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, PortError> {
        let entries = self
            .list_pages("list keys", prefix, GetOptions::new().with_keys_only())
            .await?;
        Ok(entries
            .iter()
            .map(|entry| String::from_utf8_lossy(entry.key()).into_owned())
            .collect())
    }

    /// The entries under `prefix` read page by page with `options` (the
    /// range, limit and revision are set here).
    async fn list_pages(
        &self,
        operation: &str,
        prefix: &str,
        options: GetOptions,
    ) -> Result<Vec<KeyValue>, PortError> {
        let end = prefix_end(prefix);
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut entries = Vec::new();
        loop {
            let page_options = options
                .clone()
                .with_range(end.clone())
                .with_limit(LIST_PAGE)
                .with_revision(revision);
            let mut client = self.client.clone();
            let mut response = self
                .call(operation, client.get(from.clone(), Some(page_options)))
                .await?;
            if revision == 0 {
                revision = response.header().map_or(0, |header| header.revision());
            }
            let more = response.more();
            let page = response.take_kvs();
            let Some(last) = page.last() else {
                break;
            };
            // The next page starts right after the last key read.
            from = last.key().to_vec();
            from.push(0);
            entries.extend(page);
            if !more {
                break;
            }
        }
        Ok(entries)
    }

    /// The last `limit` entries under `prefix`, in descending key order.
    pub(crate) async fn list_last(
        &self,
        prefix: &str,
        limit: i64,
    ) -> Result<Vec<KeyValue>, PortError> {
        let mut client = self.client.clone();
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(limit);
        let mut response = self
            .call("list last", client.get(prefix, Some(options)))
            .await?;
        Ok(response.take_kvs())
    }

    /// The entry under `prefix` created first (the election's leader), and
    /// the revision the answer was read at.
    pub(crate) async fn first_created(
        &self,
        prefix: &str,
    ) -> Result<(Option<KeyValue>, i64), PortError> {
        let mut client = self.client.clone();
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let mut response = self
            .call("read election", client.get(prefix, Some(options)))
            .await?;
        let revision = response.header().map_or(0, |header| header.revision());
        Ok((response.take_kvs().into_iter().next(), revision))
    }

    /// Runs a transaction.
    pub(crate) async fn txn(&self, operation: &str, txn: Txn) -> Result<TxnResponse, PortError> {
        let mut client = self.client.clone();
        self.call(operation, client.txn(txn)).await
    }
}

/// The first key after every key that starts with `prefix` (etcd's range
/// end of a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or no prefix): to the end of the key space.
    vec![0]
}
