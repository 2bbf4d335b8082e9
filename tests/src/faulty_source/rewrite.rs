//! The faults that rewrite a successful page body: malformed JSON, keys
//! backwards, a key repeated from the previous page, dropped items, an
//! empty tenant list. Each keeps the rest of the page intact.

use super::{Action, Fault, ProxyState, lock};
use axum::body::Bytes;
use serde_json::Value;

/// Applies the page-rewriting faults to a successful page body.
/// A capabilities body naming `definition` as its digests' definition.
pub(super) fn rename_digest_definition(body: Bytes, definition: &str) -> Bytes {
    let Ok(mut capabilities) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    capabilities["digest_definition"] = Value::String(definition.to_owned());
    Bytes::from(capabilities.to_string())
}

pub(super) fn rewrite_page(state: &ProxyState, action: Action, body: Bytes) -> Bytes {
    if action == Action::Malformed {
        return body.slice(..body.len() / 2);
    }
    let Ok(mut page) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    if !page.get("items").is_some_and(Value::is_array) {
        return body;
    }
    let has_next = !page["next_after"].is_null();
    let items = page["items"]
        .as_array_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let items = match action {
        Action::EmptyTenants => Vec::new(),
        Action::Backwards => swap_first_two(items),
        Action::Drop(share) => drop_share(items, share, has_next),
        Action::Duplicate => {
            let previous = lock(&state.plan).previous_last_item.clone();
            prepend_previous(items, previous, has_next)
        }
        _ => items,
    };
    remember_last_item(state, &items);
    // A page no fault rewrites goes on as the source wrote it (its cursor
    // is of whatever schema the source serves).
    let rewritten = matches!(
        action,
        Action::EmptyTenants | Action::Backwards | Action::Drop(_) | Action::Duplicate
    );
    if !rewritten {
        return body;
    }
    if action == Action::EmptyTenants || (has_next && items.is_empty()) {
        page["next_after"] = Value::Null;
    } else if has_next && let Some(last) = items.last() {
        page["next_after"] = Value::from(item_key(last));
    }
    page["items"] = Value::Array(items);
    serde_json::to_vec(&page).map(Bytes::from).unwrap_or(body)
}

fn remember_last_item(state: &ProxyState, items: &[Value]) {
    let mut plan = lock(&state.plan);
    if matches!(plan.fault, Fault::DuplicateKeyAcrossPages { .. }) {
        plan.previous_last_item = items.last().cloned();
    }
}

fn swap_first_two(mut items: Vec<Value>) -> Vec<Value> {
    if items.len() >= 2 {
        items.swap(0, 1);
    }
    items
}

fn drop_share(items: Vec<Value>, share: f64, has_next: bool) -> Vec<Value> {
    let count = items.len();
    items
        .into_iter()
        .enumerate()
        .filter(|(index, item)| {
            let keep_for_cursor = has_next && *index + 1 == count;
            keep_for_cursor || hash_share(&item_key(item)) >= share
        })
        .map(|(_, item)| item)
        .collect()
}

fn prepend_previous(mut items: Vec<Value>, previous: Option<Value>, has_next: bool) -> Vec<Value> {
    let Some(previous) = previous else {
        return items;
    };
    if has_next {
        items.pop();
    }
    items.insert(0, previous);
    items
}

/// The cursor form of an item's key: `id` or `group_id:user_id`.
fn item_key(item: &Value) -> String {
    match item["id"].as_str() {
        Some(id) => id.to_owned(),
        None => format!(
            "{}:{}",
            item["group_id"].as_str().unwrap_or_default(),
            item["user_id"].as_str().unwrap_or_default()
        ),
    }
}

/// A stable value in `[0, 1)` for a key (FNV-1a).
fn hash_share(key: &str) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % 10_000) as f64 / 10_000.0
}
