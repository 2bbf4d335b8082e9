//! The default schema's typed write API (`put_user` and friends): each
//! call is the generic [`Monolith::upsert`] or [`Monolith::delete`] of the
//! record's kind, key and values. On a monolith of another schema they
//! answer 404 (the kind is not declared).

use super::WriteOutcome;
use crate::Monolith;
use crate::error::Result;
use recon_core::{Group, Membership, Record, Tenant, User};

impl Monolith {
    async fn put_record(&self, tenant_id: &str, record: &Record) -> Result<WriteOutcome> {
        self.upsert(
            record.kind().as_str(),
            tenant_id,
            record.key_ref().parts().to_vec(),
            record.values().to_vec(),
        )
        .await
    }

    /// Creates or updates a tenant.
    pub async fn put_tenant(&self, tenant: &Tenant) -> Result<WriteOutcome> {
        self.put_record(&tenant.id, &Record::from(tenant.clone()))
            .await
    }

    /// Creates or updates a user of an existing tenant.
    pub async fn put_user(&self, tenant_id: &str, user: &User) -> Result<WriteOutcome> {
        self.put_record(tenant_id, &Record::from(user.clone()))
            .await
    }

    /// Creates or updates a group of an existing tenant.
    pub async fn put_group(&self, tenant_id: &str, group: &Group) -> Result<WriteOutcome> {
        self.put_record(tenant_id, &Record::from(group.clone()))
            .await
    }

    /// Adds a user to a group (or re-writes the membership with a new
    /// version). The user and the group must exist in the tenant
    /// ([`crate::Error::Conflict`] otherwise).
    pub async fn put_membership(
        &self,
        tenant_id: &str,
        membership: &Membership,
    ) -> Result<WriteOutcome> {
        self.put_record(tenant_id, &Record::from(membership.clone()))
            .await
    }

    /// Deletes a tenant with all its memberships, users and groups.
    pub async fn delete_tenant(&self, tenant_id: &str) -> Result<WriteOutcome> {
        self.delete("tenant", tenant_id, vec![tenant_id.to_owned()])
            .await
    }

    /// Deletes a user and its memberships.
    pub async fn delete_user(&self, tenant_id: &str, user_id: &str) -> Result<WriteOutcome> {
        self.delete("user", tenant_id, vec![user_id.to_owned()])
            .await
    }

    /// Deletes a group and its memberships.
    pub async fn delete_group(&self, tenant_id: &str, group_id: &str) -> Result<WriteOutcome> {
        self.delete("group", tenant_id, vec![group_id.to_owned()])
            .await
    }

    /// Removes a user from a group.
    pub async fn delete_membership(
        &self,
        tenant_id: &str,
        group_id: &str,
        user_id: &str,
    ) -> Result<WriteOutcome> {
        let key = vec![group_id.to_owned(), user_id.to_owned()];
        self.delete("membership", tenant_id, key).await
    }
}
