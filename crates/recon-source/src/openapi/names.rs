//! Every name and phrase the document derives from a schema, decided once:
//! component names and operation ids (unique whatever the kinds are
//! called), paths, cursor forms, and the English of the descriptions.

use recon_core::schema::{KindDef, Schema};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Most rows one page may ask for.
pub(super) const MAX_LIMIT: u32 = 10_000;
/// The rows of a page that does not say how many.
pub(super) const DEFAULT_LIMIT: u32 = 1_000;

/// Components whose names do not depend on the schema. They are claimed
/// before any kind's, so a kind named like one of them gets another name.
pub(super) mod fixed {
    pub const VERSION: &str = "Version";
    pub const ID: &str = "Id";
    pub const ERROR: &str = "Error";
    pub const COUNTS: &str = "Counts";
    pub const CAPABILITIES: &str = "Capabilities";
    pub const DIGEST_RANGE: &str = "DigestRange";
    pub const DIGESTS: &str = "Digests";
    pub const KIND_DIGEST: &str = "KindDigest";
    pub const ID_PAGE_RANGE: &str = "IdPageRange";
    pub const ID_PAGE_WITHIN: &str = "IdPageWithin";
    pub const LIMIT: &str = "Limit";
    pub const BUCKETS: &str = "Buckets";
    pub const ID_RANGE_AFTER: &str = "IdRangeAfter";
    pub const ID_RANGE_UNTIL: &str = "IdRangeUntil";
    pub const BAD_REQUEST: &str = "BadRequest";
    pub const UNAUTHORIZED: &str = "Unauthorized";
    pub const NOT_FOUND: &str = "NotFound";
    pub const BEARER_AUTH: &str = "bearerAuth";

    /// Every fixed component name.
    pub const ALL: [&str; 17] = [
        VERSION,
        ID,
        ERROR,
        COUNTS,
        CAPABILITIES,
        DIGEST_RANGE,
        DIGESTS,
        KIND_DIGEST,
        ID_PAGE_RANGE,
        ID_PAGE_WITHIN,
        LIMIT,
        BUCKETS,
        ID_RANGE_AFTER,
        ID_RANGE_UNTIL,
        BAD_REQUEST,
        UNAUTHORIZED,
        NOT_FOUND,
    ];

    /// Operation ids that do not depend on the schema.
    pub const COUNT_OPERATION: &str = "countEntities";
    pub const CAPABILITIES_OPERATION: &str = "capabilities";
}

/// The schema's names as the document spells them.
pub(super) struct Api<'a> {
    /// The scope kind.
    pub scope: KindApi<'a>,
    /// Every other kind, in file order.
    pub scoped: Vec<KindApi<'a>>,
    /// The scope's path parameter (`tenant_id`).
    pub scope_parameter: String,
    /// The path of one scope value (`/v1/tenants/{tenant_id}`).
    pub scope_path: String,
    /// The scope path parameter's component (`TenantId`).
    pub scope_id_component: String,
    /// The schema of one scope value's digests (`TenantDigests`).
    pub scope_digests_component: String,
    /// The schema of one entry of every scope value's digests
    /// (`TenantKinds`).
    pub scope_kinds_component: String,
    /// The schema of every scope value's digests (`AllTenantDigests`).
    pub all_digests_component: String,
    /// `tenantDigests`.
    pub scope_digests_operation: String,
    /// `allTenantDigests`.
    pub all_digests_operation: String,
    /// The capability flag of every scope value's digests
    /// (`all_tenant_digests`).
    pub all_digests_capability: String,
}

/// One kind's names.
pub(super) struct KindApi<'a> {
    /// The declaration.
    pub def: &'a KindDef,
    /// The singular in prose (`product tag`).
    pub words: String,
    /// The plural in prose (`product tags`).
    pub plural_words: String,
    /// The item schema (`ProductTag`).
    pub item: String,
    /// The page schema (`ProductTagPage`).
    pub page: String,
    /// `listProductTags`.
    pub list_operation: String,
    /// `productTagRangeDigests`.
    pub range_digests_operation: String,
    /// `productTagPageWithin`.
    pub page_within_operation: String,
    /// How the kind's keys are written as cursors.
    pub cursor: Cursor,
}

/// A kind's cursor: the key as `after` and `until` carry it.
pub(super) enum Cursor {
    /// One key field: the cursor is the id itself.
    Id {
        /// The key field in prose (`id`, `code`).
        noun: String,
    },
    /// Several key fields, joined by `:`.
    Composite(CompositeCursor),
}

/// The names of a composite key's cursor.
pub(super) struct CompositeCursor {
    /// The form, quoted: `` `<group_id>:<user_id>` ``.
    pub form: String,
    /// The cursor's schema (`MembershipCursor`).
    pub schema: String,
    /// The range digests' `after` parameter (`MembershipRangeAfter`).
    pub range_after: String,
    /// The range digests' `until` parameter (`MembershipRangeUntil`).
    pub range_until: String,
    /// One range of a multi-range page request (`MembershipPageRange`).
    pub page_range: String,
    /// The multi-range page request (`MembershipPageWithin`).
    pub page_within: String,
}

impl<'a> Api<'a> {
    /// Names every kind of `schema`.
    pub fn new(schema: &'a Schema) -> Self {
        let mut components = UniqueNames::new(fixed::ALL);
        let mut operations =
            UniqueNames::new([fixed::COUNT_OPERATION, fixed::CAPABILITIES_OPERATION]);
        let scope = schema.scope();
        let scope_pascal = pascal(&scope.name);
        let scope_camel = camel(&scope.name);
        let scope_parameter = schema.scope_column();
        let scope_path = format!("/v1/{}/{{{scope_parameter}}}", scope.plural);
        let scope_id_component = components.claim(format!("{scope_pascal}Id"));
        let scope_digests_component = components.claim(format!("{scope_pascal}Digests"));
        let scope_kinds_component = components.claim(format!("{scope_pascal}Kinds"));
        let all_digests_component = components.claim(format!("All{scope_pascal}Digests"));
        let scope_digests_operation = operations.claim(format!("{scope_camel}Digests"));
        let all_digests_operation = operations.claim(format!("all{scope_pascal}Digests"));
        // Kinds claim their names in file order, the scope kind among them.
        let mut scoped: Vec<KindApi> = schema
            .kinds()
            .iter()
            .map(|kind| KindApi::new(kind, &mut components, &mut operations))
            .collect();
        let scope_position = scoped
            .iter()
            .position(|kind| kind.def.name == scope.name)
            .expect("a validated schema declares its scope kind");
        let scope_api = scoped.remove(scope_position);
        Api {
            scope: scope_api,
            scoped,
            all_digests_capability: format!("all_{}_digests", scope.name),
            scope_parameter,
            scope_path,
            scope_id_component,
            scope_digests_component,
            scope_kinds_component,
            all_digests_component,
            scope_digests_operation,
            all_digests_operation,
        }
    }

    /// The scope in prose with its article (`a tenant`).
    pub fn a_scope(&self) -> String {
        with_article(&self.scope.words)
    }

    /// The list path of a kind: `/v1/tenants` for the scope kind,
    /// `/v1/tenants/{tenant_id}/users` for a scoped one.
    pub fn list_path(&self, kind: &KindApi) -> String {
        if kind.def.scoped {
            format!("{}/{}", self.scope_path, kind.def.plural)
        } else {
            format!("/v1/{}", kind.def.plural)
        }
    }

    /// `/v1/tenants/{tenant_id}/digests/users`.
    pub fn range_digests_path(&self, kind: &KindApi) -> String {
        format!("{}/digests/{}", self.scope_path, kind.def.plural)
    }

    /// `/v1/tenants/{tenant_id}/pages/users`.
    pub fn page_within_path(&self, kind: &KindApi) -> String {
        format!("{}/pages/{}", self.scope_path, kind.def.plural)
    }

    /// The scoped kinds whose cursor is an id.
    pub fn id_kinds(&self) -> impl Iterator<Item = &KindApi<'a>> {
        self.scoped
            .iter()
            .filter(|kind| matches!(kind.cursor, Cursor::Id { .. }))
    }

    /// The scoped kinds with a composite key, and their cursors.
    pub fn composite_kinds(&self) -> impl Iterator<Item = (&KindApi<'a>, &CompositeCursor)> {
        self.scoped.iter().filter_map(|kind| match &kind.cursor {
            Cursor::Composite(cursor) => Some((kind, cursor)),
            Cursor::Id { .. } => None,
        })
    }

    /// The scoped kinds' plurals, as URL segments and properties.
    pub fn scoped_plurals(&self) -> Vec<&str> {
        self.scoped
            .iter()
            .map(|kind| kind.def.plural.as_str())
            .collect()
    }

    /// The scoped kinds' plurals in prose.
    pub fn scoped_plural_words(&self) -> Vec<&str> {
        self.scoped
            .iter()
            .map(|kind| kind.plural_words.as_str())
            .collect()
    }
}

impl<'a> KindApi<'a> {
    fn new(def: &'a KindDef, components: &mut UniqueNames, operations: &mut UniqueNames) -> Self {
        let kind_pascal = pascal(&def.name);
        let kind_camel = camel(&def.name);
        let item = components.claim(kind_pascal.clone());
        let page = components.claim(format!("{kind_pascal}Page"));
        let cursor = match def.key.as_slice() {
            [single] => Cursor::Id {
                noun: words(single),
            },
            parts => Cursor::Composite(CompositeCursor {
                form: format!(
                    "`{}`",
                    parts
                        .iter()
                        .map(|part| format!("<{part}>"))
                        .collect::<Vec<_>>()
                        .join(":")
                ),
                schema: components.claim(format!("{kind_pascal}Cursor")),
                range_after: components.claim(format!("{kind_pascal}RangeAfter")),
                range_until: components.claim(format!("{kind_pascal}RangeUntil")),
                page_range: components.claim(format!("{kind_pascal}PageRange")),
                page_within: components.claim(format!("{kind_pascal}PageWithin")),
            }),
        };
        KindApi {
            def,
            words: words(&def.name),
            plural_words: words(&def.plural),
            item,
            page,
            list_operation: operations.claim(format!("list{}", pascal(&def.plural))),
            range_digests_operation: operations.claim(format!("{kind_camel}RangeDigests")),
            page_within_operation: operations.claim(format!("{kind_camel}PageWithin")),
            cursor,
        }
    }

    /// The key fields in order, as `ordered by` names them: `id`, or
    /// `(group_id, user_id)`.
    pub fn key_order(&self) -> String {
        match self.def.key.as_slice() {
            [single] => single.clone(),
            parts => format!("({})", parts.join(", ")),
        }
    }

    /// The schema of one cursor value.
    pub fn cursor_schema(&self) -> Value {
        match &self.cursor {
            Cursor::Id { .. } => schema_ref(fixed::ID),
            Cursor::Composite(cursor) => schema_ref(&cursor.schema),
        }
    }
}

/// Names handed out once each: a taken name gets a number (`User2`).
struct UniqueNames {
    taken: BTreeSet<String>,
}

impl UniqueNames {
    fn new<const N: usize>(reserved: [&str; N]) -> Self {
        UniqueNames {
            taken: reserved.into_iter().map(str::to_owned).collect(),
        }
    }

    fn claim(&mut self, wanted: String) -> String {
        let mut candidate = wanted.clone();
        let mut number = 2;
        while self.taken.contains(&candidate) {
            candidate = format!("{wanted}{number}");
            number += 1;
        }
        self.taken.insert(candidate.clone());
        candidate
    }
}

/// `{"$ref": "#/components/schemas/<name>"}`.
pub(super) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// `{"$ref": "#/components/parameters/<name>"}`.
pub(super) fn parameter_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

/// `{"$ref": "#/components/responses/<name>"}`.
pub(super) fn response_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// A name's words: `product_tag` and `product-tags` become `product tag`
/// and `product tags`, `group_id` becomes `group id`.
pub(super) fn words(name: &str) -> String {
    name.replace(['_', '-'], " ")
}

/// `product_tag` → `ProductTag`.
fn pascal(name: &str) -> String {
    name.split(['_', '-']).map(capitalize).collect()
}

/// `product_tag` → `productTag`.
fn camel(name: &str) -> String {
    let pascal = pascal(name);
    let mut chars = pascal.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The first letter in upper case.
pub(super) fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A noun with its indefinite article, by its first letter (`a tenant`,
/// `an order`; `a user`).
pub(super) fn with_article(noun: &str) -> String {
    let article = match noun.chars().next() {
        Some('a' | 'e' | 'i' | 'o') => "an",
        _ => "a",
    };
    format!("{article} {noun}")
}

/// The plural of a noun in prose (`ids`, `names`, `addresses`,
/// `categories`).
pub(super) fn plural_noun(noun: &str) -> String {
    let consonant_y = noun.ends_with('y')
        && !noun.ends_with("ay")
        && !noun.ends_with("ey")
        && !noun.ends_with("oy")
        && !noun.ends_with("uy");
    if consonant_y {
        format!("{}ies", &noun[..noun.len() - 1])
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|ending| noun.ends_with(ending))
    {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

/// `a`, `a and b`, `a, b and c` (with `or` for `conjunction = "or"`).
pub(super) fn english_list(items: &[&str], conjunction: &str) -> String {
    match items {
        [] => String::new(),
        [only] => (*only).to_owned(),
        [init @ .., last] => format!("{} {conjunction} {last}", init.join(", ")),
    }
}
