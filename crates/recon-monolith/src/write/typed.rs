//! The default schema's typed write API (`put_user` and friends): each
//! call is the generic [`Monolith::upsert`] or [`Monolith::delete`] of the
//! record's kind, key and values. On a monolith of another schema they
//! answer 404 (the kind is not declared).

use super::WriteOutcome;
use crate::Monolith;
use crate::error::Result;
use recon_core::schema::FieldValue;
use recon_core::{Group, Membership, Record, Tenant, User};

/// The kind, key and values of a default-schema record.
pub(crate) fn record_parts(record: &Record) -> (&'static str, Vec<String>, Vec<FieldValue>) {
    let text = |value: &str| FieldValue::Text(value.to_owned());
    match record {
        Record::Tenant(tenant) => ("tenant", vec![tenant.id.clone()], vec![text(&tenant.name)]),
        Record::User(user) => (
            "user",
            vec![user.id.clone()],
            vec![
                text(&user.email),
                text(&user.display_name),
                text(user.status.as_str()),
            ],
        ),
        Record::Group(group) => ("group", vec![group.id.clone()], vec![text(&group.name)]),
        Record::Membership(membership) => (
            "membership",
            vec![membership.group_id.clone(), membership.user_id.clone()],
            Vec::new(),
        ),
    }
}

impl Monolith {
    async fn put_record(&self, tenant_id: &str, record: &Record) -> Result<WriteOutcome> {
        let (kind, key, values) = record_parts(record);
        self.upsert(kind, tenant_id, key, values).await
    }

    /// Creates or updates a tenant.
    pub async fn put_tenant(&self, tenant: &Tenant) -> Result<WriteOutcome> {
        self.put_record(&tenant.id, &Record::Tenant(tenant.clone()))
            .await
    }

    /// Creates or updates a user of an existing tenant.
    pub async fn put_user(&self, tenant_id: &str, user: &User) -> Result<WriteOutcome> {
        self.put_record(tenant_id, &Record::User(user.clone()))
            .await
    }

    /// Creates or updates a group of an existing tenant.
    pub async fn put_group(&self, tenant_id: &str, group: &Group) -> Result<WriteOutcome> {
        self.put_record(tenant_id, &Record::Group(group.clone()))
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
        self.put_record(tenant_id, &Record::Membership(membership.clone()))
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
