//! The client's own JSON shapes of the Source API
//! (`proto/source-api.openapi.json`), independent of any server's code.
//!
//! Required fields must be present with the right types; unknown fields are
//! ignored, as the contract asks of clients. `next_after` is required too
//! (`null` on the last page): a missing one must not read as "last page".

use recon_core::domain::validate_id;
use recon_core::{Group, Kind, Membership, Record, Row, Tenant, User, UserStatus, Version};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A page as sent, items still untyped so that a bad one can be named by
/// its index.
#[derive(Debug, Deserialize)]
pub(crate) struct RawPage {
    pub(crate) items: Vec<Value>,
    pub(crate) watermark: Version,
    #[serde(deserialize_with = "required_nullable")]
    pub(crate) next_after: Option<String>,
}

/// `Option<String>` that must be present (as a string or `null`). With
/// `deserialize_with`, serde reports a missing field instead of `None`.
fn required_nullable<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(deserializer)
}

/// The body of an error response.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: String,
}

#[derive(Debug, Deserialize)]
struct NamedItem {
    id: String,
    name: String,
    version: Version,
}

#[derive(Debug, Deserialize)]
struct UserItem {
    id: String,
    email: String,
    display_name: String,
    status: String,
    version: Version,
}

#[derive(Debug, Deserialize)]
struct MembershipItem {
    group_id: String,
    user_id: String,
    version: Version,
}

/// Converts one item of a `kind` page of `tenant_id` into a row; the error
/// says which field is missing, mistyped or invalid.
pub(crate) fn item_to_row(kind: Kind, tenant_id: &str, item: Value) -> Result<Row, String> {
    let problem = |error: serde_json::Error| error.to_string();
    let invalid = |error: recon_core::InvalidInput| error.to_string();
    let (row_tenant, record, version) = match kind {
        Kind::TENANT => {
            let item: NamedItem = serde_json::from_value(item).map_err(problem)?;
            recon_core::validate_tenant_id(&item.id).map_err(invalid)?;
            let tenant = Tenant {
                id: item.id.clone(),
                name: item.name,
            };
            (item.id, Record::from(tenant), item.version)
        }
        Kind::USER => {
            let item: UserItem = serde_json::from_value(item).map_err(problem)?;
            validate_id("user id", &item.id).map_err(invalid)?;
            let status: UserStatus = item.status.parse().map_err(invalid)?;
            let user = User {
                id: item.id,
                email: item.email,
                display_name: item.display_name,
                status,
            };
            (tenant_id.to_owned(), Record::from(user), item.version)
        }
        Kind::GROUP => {
            let item: NamedItem = serde_json::from_value(item).map_err(problem)?;
            validate_id("group id", &item.id).map_err(invalid)?;
            let group = Group {
                id: item.id,
                name: item.name,
            };
            (tenant_id.to_owned(), Record::from(group), item.version)
        }
        Kind::MEMBERSHIP => {
            let item: MembershipItem = serde_json::from_value(item).map_err(problem)?;
            validate_id("group id", &item.group_id).map_err(invalid)?;
            validate_id("user id", &item.user_id).map_err(invalid)?;
            if item.group_id.contains(':') {
                return Err(format!(
                    "group id {:?} contains `:`, which the cursor form forbids",
                    item.group_id
                ));
            }
            let membership = Membership {
                group_id: item.group_id,
                user_id: item.user_id,
            };
            (tenant_id.to_owned(), Record::from(membership), item.version)
        }
        other => return Err(format!("kind {other} is not a kind of the default schema")),
    };
    Ok(Row {
        tenant_id: row_tenant,
        record,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn next_after_is_required_but_nullable() {
        let missing = serde_json::from_value::<RawPage>(
            json!({"items": [], "watermark": {"generation": 1, "sequence": 2}}),
        )
        .expect_err("missing next_after");
        assert!(missing.to_string().contains("next_after"), "{missing}");
        let page = serde_json::from_value::<RawPage>(json!({
            "items": [], "watermark": {"generation": 1, "sequence": 2},
            "next_after": null, "extra": [1, 2]
        }))
        .expect("null next_after and an unknown field");
        assert_eq!(page.next_after, None);
        let no_watermark =
            serde_json::from_value::<RawPage>(json!({"items": [], "next_after": null}))
                .expect_err("missing watermark");
        assert!(no_watermark.to_string().contains("watermark"));
    }

    #[test]
    fn items_become_rows_and_problems_are_named() {
        let version = json!({"generation": 0, "sequence": 7});
        let row = item_to_row(
            Kind::USER,
            "t1",
            json!({"id": "u1", "email": "e", "display_name": "d", "status": "disabled",
                   "version": version, "nickname": "ignored"}),
        )
        .expect("valid user");
        assert_eq!(row.tenant_id, "t1");
        assert_eq!(row.version, Version::new(0, 7));
        let cases = [
            (
                Kind::USER,
                json!({"id": "u1", "display_name": "d", "status": "active", "version": version}),
                "email",
            ),
            (
                Kind::USER,
                json!({"id": "u1", "email": "e", "display_name": "d", "status": "gone", "version": version}),
                "user status",
            ),
            (
                Kind::GROUP,
                json!({"id": 5, "name": "n", "version": version}),
                "invalid type",
            ),
            (
                Kind::GROUP,
                json!({"id": "", "name": "n", "version": version}),
                "group id",
            ),
            (Kind::TENANT, json!({"id": "t", "name": "n"}), "version"),
            (
                Kind::MEMBERSHIP,
                json!({"group_id": "g", "version": version}),
                "user_id",
            ),
            (
                Kind::MEMBERSHIP,
                json!({"group_id": "g:x", "user_id": "u", "version": version}),
                "`:`",
            ),
            (
                Kind::MEMBERSHIP,
                json!({"group_id": "g", "user_id": "u\n", "version": version}),
                "user id",
            ),
            (Kind::TENANT, json!("just a string"), "invalid type"),
        ];
        for (kind, item, expected) in cases {
            let error = item_to_row(kind, "t1", item.clone()).expect_err("must be refused");
            assert!(
                error.contains(expected),
                "{item}: {error} should mention {expected}"
            );
        }
    }
}
