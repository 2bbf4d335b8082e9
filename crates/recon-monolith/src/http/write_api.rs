//! The write routes and the operator routes.
//!
//! * `PUT|DELETE /v1/tenants/{id}` (`{"name"}`)
//! * `PUT|DELETE /v1/tenants/{tenant_id}/users/{id}` (`{"email", "display_name", "status"}`)
//! * `PUT|DELETE /v1/tenants/{tenant_id}/groups/{id}` (`{"name"}`)
//! * `PUT|DELETE /v1/tenants/{tenant_id}/groups/{group_id}/members/{user_id}` (no body)
//! * `POST /admin/backups` → `{"backup_id"}`
//! * `POST /admin/backups/{backup_id}/restore` → `{"backup_id", "generation", "watermark"}`
//!
//! Writes answer `{"version": {...}, "changes": n}`. Bodies refuse unknown
//! fields.

use super::wire::{BackupBody, GroupBody, TenantBody, UserBody};
use super::{ApiError, ApiJson, ApiPath, AppState};
use crate::backup::RestoreOutcome;
use crate::write::WriteOutcome;
use axum::extract::State;
use axum::routing::{post, put};
use axum::{Json, Router};
use recon_core::{Group, Membership, Tenant, User};

/// The write and operator routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tenants/{tenant_id}",
            put(put_tenant).delete(delete_tenant),
        )
        .route(
            "/v1/tenants/{tenant_id}/users/{user_id}",
            put(put_user).delete(delete_user),
        )
        .route(
            "/v1/tenants/{tenant_id}/groups/{group_id}",
            put(put_group).delete(delete_group),
        )
        .route(
            "/v1/tenants/{tenant_id}/groups/{group_id}/members/{user_id}",
            put(put_membership).delete(delete_membership),
        )
        .route("/admin/backups", post(create_backup))
        .route("/admin/backups/{backup_id}/restore", post(restore_backup))
}

type WriteResponse = Result<Json<WriteOutcome>, ApiError>;

async fn put_tenant(
    State(state): State<AppState>,
    ApiPath(tenant_id): ApiPath<String>,
    ApiJson(body): ApiJson<TenantBody>,
) -> WriteResponse {
    let tenant = Tenant {
        id: tenant_id,
        name: body.name,
    };
    Ok(Json(state.monolith.put_tenant(&tenant).await?))
}

async fn delete_tenant(
    State(state): State<AppState>,
    ApiPath(tenant_id): ApiPath<String>,
) -> WriteResponse {
    Ok(Json(state.monolith.delete_tenant(&tenant_id).await?))
}

async fn put_user(
    State(state): State<AppState>,
    ApiPath((tenant_id, user_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<UserBody>,
) -> WriteResponse {
    let user = User {
        id: user_id,
        email: body.email,
        display_name: body.display_name,
        status: body.status,
    };
    Ok(Json(state.monolith.put_user(&tenant_id, &user).await?))
}

async fn delete_user(
    State(state): State<AppState>,
    ApiPath((tenant_id, user_id)): ApiPath<(String, String)>,
) -> WriteResponse {
    Ok(Json(
        state.monolith.delete_user(&tenant_id, &user_id).await?,
    ))
}

async fn put_group(
    State(state): State<AppState>,
    ApiPath((tenant_id, group_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<GroupBody>,
) -> WriteResponse {
    let group = Group {
        id: group_id,
        name: body.name,
    };
    Ok(Json(state.monolith.put_group(&tenant_id, &group).await?))
}

async fn delete_group(
    State(state): State<AppState>,
    ApiPath((tenant_id, group_id)): ApiPath<(String, String)>,
) -> WriteResponse {
    Ok(Json(
        state.monolith.delete_group(&tenant_id, &group_id).await?,
    ))
}

async fn put_membership(
    State(state): State<AppState>,
    ApiPath((tenant_id, group_id, user_id)): ApiPath<(String, String, String)>,
) -> WriteResponse {
    let membership = Membership { group_id, user_id };
    Ok(Json(
        state
            .monolith
            .put_membership(&tenant_id, &membership)
            .await?,
    ))
}

async fn delete_membership(
    State(state): State<AppState>,
    ApiPath((tenant_id, group_id, user_id)): ApiPath<(String, String, String)>,
) -> WriteResponse {
    Ok(Json(
        state
            .monolith
            .delete_membership(&tenant_id, &group_id, &user_id)
            .await?,
    ))
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
