//! The default schema's typed view of range digests: buckets bounded by
//! [`EntityKey`]s, a tenant's kinds as users, groups and memberships.

use super::Digests;
use crate::Monolith;
use crate::error::{Error, Result};
use crate::rows::KeySpan;
use recon_core::{EntityKey, KeyRange, Kind, RangeDigest};

/// One range of a typed digest answer: after the previous range's `until`
/// (or the request's `after`), up to and including `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Inclusive upper bound; the last bucket ends where the request does.
    pub until: Option<EntityKey>,
    /// Count and element sum.
    pub digest: RangeDigest,
}

impl Monolith {
    /// The digests of a tenant's rows of `kind` in `range`, split into at
    /// most `buckets` consecutive ranges of about equal row counts (see
    /// [`Monolith::span_digests`]).
    pub async fn digests(
        &self,
        tenant_id: &str,
        kind: Kind,
        range: &KeyRange,
        buckets: u32,
    ) -> Result<Digests<Bucket>> {
        if kind == Kind::TENANT {
            return Err(Error::BadRequest(
                "digests are per tenant: users, groups or memberships".to_owned(),
            ));
        }
        let span = KeySpan {
            after: range.after.as_ref().map(|key| key.parts().to_vec()),
            until: range.until.as_ref().map(|key| key.parts().to_vec()),
        };
        let digests = self
            .span_digests(tenant_id, kind.as_str(), &span, buckets)
            .await?;
        Ok(Digests {
            buckets: digests
                .buckets
                .into_iter()
                .map(|bucket| Bucket {
                    until: bucket.until.map(EntityKey::from_parts),
                    digest: bucket.digest,
                })
                .collect(),
            watermark: digests.watermark,
        })
    }
}
