//! The write routes and the operator routes, built from the schema
//! (`<scopes>` is the scope kind's plural, `<kind>` a scoped kind's):
//!
//! * `PUT|DELETE /v1/<scopes>/{id}`
//! * `PUT|DELETE /v1/<scopes>/{id}/<kind>/{key}` (a composite key's parts
//!   as consecutive segments: `/v1/tenants/t1/memberships/g1/u1`)
//! * default schema: `PUT|DELETE /v1/tenants/{tenant_id}/groups/{group_id}/members/{user_id}`
//!   too (a membership, as before schemas were declared)
//! * `POST /admin/backups` → `{"backup_id"}`
//! * `POST /admin/backups/{backup_id}/restore` → `{"backup_id", "generation", "watermark"}`
//!
//! A `PUT` of a kind with data fields takes them as a JSON object (see
//! `super::json`: unknown properties are refused, a nullable field left
//! out is NULL); a kind without data fields takes no body. Writes answer
//! `{"version": {...}, "changes": n}`.

use super::json::body_values;
use super::wire::BackupBody;
use super::{ApiError, ApiJson, ApiPath, AppState};
use crate::backup::RestoreOutcome;
use crate::model::Model;
use crate::write::WriteOutcome;
use axum::extract::State;
use axum::routing::{MethodRouter, post, put};
use axum::{Json, Router};
use serde_json::Value;

type WriteResponse = Result<Json<WriteOutcome>, ApiError>;

/// The write and operator routes of `model`'s schema.
pub(crate) fn routes(model: &Model) -> Router<AppState> {
    let scope = model.scope();
    let scope_path = format!("/v1/{}/{{{}_id}}", scope.def.plural, scope.name());
    let mut router = Router::new().route(&scope_path, row_routes(model, scope.index));
    for kind in model.scoped_kinds() {
        let key: Vec<String> = kind
            .key()
            .iter()
            .map(|field| format!("{{{field}}}"))
            .collect();
        router = router.route(
            &format!("{scope_path}/{}/{}", kind.def.plural, key.join("/")),
            row_routes(model, kind.index),
        );
    }
    if model.is_default()
        && let (Some(group), Some(membership)) = (model.kind("group"), model.kind("membership"))
    {
        router = router.route(
            &format!(
                "{scope_path}/groups/{{{}}}/members/{{user_id}}",
                group.key()[0]
            ),
            row_routes(model, membership.index),
        );
    }
    router
        .route("/admin/backups", post(create_backup))
        .route("/admin/backups/{backup_id}/restore", post(restore_backup))
}

/// `PUT` and `DELETE` of a row of kind `index`; the path holds the scope
/// value, then (scoped kinds) the key's parts.
fn row_routes(model: &Model, index: usize) -> MethodRouter<AppState> {
    let delete = move |State(state): State<AppState>, ApiPath(parts): ApiPath<Vec<String>>| async move {
        delete_row(state, index, parts).await
    };
    if model.kind_at(index).fields().is_empty() {
        put(
            move |State(state): State<AppState>, ApiPath(parts): ApiPath<Vec<String>>| async move {
                put_row(state, index, parts, None).await
            },
        )
        .delete(delete)
    } else {
        put(
            move |State(state): State<AppState>,
                  ApiPath(parts): ApiPath<Vec<String>>,
                  ApiJson(body): ApiJson<Value>| async move {
                put_row(state, index, parts, Some(body)).await
            },
        )
        .delete(delete)
    }
}

/// The scope value and the key of a row's path.
fn address(model: &Model, index: usize, mut parts: Vec<String>) -> (String, Vec<String>) {
    let scope = if parts.is_empty() {
        String::new()
    } else {
        parts.remove(0)
    };
    let key = if model.kind_at(index).scoped() {
        parts
    } else {
        vec![scope.clone()]
    };
    (scope, key)
}

async fn put_row(
    state: AppState,
    index: usize,
    parts: Vec<String>,
    body: Option<Value>,
) -> WriteResponse {
    let model = state.monolith.model();
    let kind = model.kind_at(index);
    let values = match body {
        Some(body) => body_values(kind, body)?,
        None => Vec::new(),
    };
    let (scope, key) = address(model, index, parts);
    Ok(Json(
        state
            .monolith
            .upsert(kind.name(), &scope, key, values)
            .await?,
    ))
}

async fn delete_row(state: AppState, index: usize, parts: Vec<String>) -> WriteResponse {
    let model = state.monolith.model();
    let kind = model.kind_at(index);
    let (scope, key) = address(model, index, parts);
    Ok(Json(state.monolith.delete(kind.name(), &scope, key).await?))
}

async fn create_backup(State(state): State<AppState>) -> Result<Json<BackupBody>, ApiError> {
    let backup_id = state.monolith.backup().await?;
    Ok(Json(BackupBody { backup_id }))
}

async fn restore_backup(
    State(state): State<AppState>,
    ApiPath(backup_id): ApiPath<i64>,
) -> Result<Json<RestoreOutcome>, ApiError> {
    Ok(Json(state.monolith.restore(backup_id).await?))
}
