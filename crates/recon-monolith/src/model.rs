//! The monolith's plan of its [`Schema`], resolved once at start-up: each
//! kind's table and columns, the key columns its references point through,
//! the kinds that reference it (what a deletion cascades to), the order of
//! deletions, and which key parts may not hold the cursor separator. Hot
//! paths read indexes and slices from here, never names.
//!
//! Table names: a kind's monolith table is its plural with `-` written `_`
//! (`tenants`, `users`, `groups`, `memberships` for the default schema —
//! the tables every monolith database has had — and `product_tags` for a
//! plural `product-tags`). The replica's table names (`table` in the
//! schema file) are recon's, not the monolith's.
//!
//! A reference from kind `K` to kind `R` (key `r1 … rn`) points through
//! key fields of `K`: each `ri` is matched to the key field of `K` named
//! `<R>_<ri>` (`group_id` for a group's `id`), else `ri` itself (`sku`),
//! else — when `R` has a single key field — `R`'s name (`tag`). A reference
//! that cannot be matched is refused when the model is built; a reference
//! to the scope kind is the scope column's.

use recon_core::schema::{FieldDef, KindDef, Schema};
use std::fmt;

/// Names the monolith's own tables take, which no kind may use.
const RESERVED_TABLES: [&str; 5] = [
    "meta",
    "outbox",
    "backups",
    "monolith_migrations",
    "monolith_schema",
];

/// A schema the monolith cannot serve, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// A kind's table would clash with the monolith's own tables or with
    /// another kind's.
    #[error("kind {kind:?}: its monolith table {table:?} {problem}; choose another plural")]
    Table {
        /// The kind.
        kind: String,
        /// The table its plural gives.
        table: String,
        /// What clashes.
        problem: String,
    },
    /// A reference no key field of the referencing kind can carry.
    #[error(
        "kind {kind:?} references {referenced:?}, but has no key field for its key field {field:?} \
         (name one {candidates})"
    )]
    UnresolvedReference {
        /// The referencing kind.
        kind: String,
        /// The referenced kind.
        referenced: String,
        /// The referenced kind's key field without a match.
        field: String,
        /// The names that would match.
        candidates: String,
    },
}

/// A reference of one kind to another, resolved to key positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The referenced kind's index.
    pub kind: usize,
    /// For each key field of the referenced kind, in its key order, the
    /// position of the referencing kind's key field that holds it.
    pub key_positions: Vec<usize>,
}

/// One kind, resolved.
#[derive(Debug, Clone)]
pub struct KindPlan {
    /// The kind's index in the schema (file order).
    pub index: usize,
    /// The declared kind.
    pub def: KindDef,
    /// The monolith's table (unquoted).
    pub table: String,
    /// The column holding the scope value: `<scope>_id` for a scoped kind,
    /// the key column for the scope kind.
    pub scope_column: String,
    /// The references, resolved, in declaration order.
    pub references: Vec<Reference>,
    /// The kinds referencing this one: `(kind index, reference index)`.
    pub referenced_by: Vec<(usize, usize)>,
    /// Per key position: whether a value there may not contain `:`
    /// (it is, here or in a kind referencing it, a composite key's
    /// non-last part).
    pub colon_free: Vec<bool>,
    /// Per key position: the name errors give the field (`user id`,
    /// `group id`, `sku`).
    pub key_labels: Vec<String>,
    /// Longest reference chain from the scope kind (0 for the scope kind).
    pub depth: usize,
}

impl KindPlan {
    /// The kind's singular name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The data fields in declaration order.
    pub fn fields(&self) -> &[FieldDef] {
        &self.def.fields
    }

    /// The key columns in key order.
    pub fn key(&self) -> &[String] {
        &self.def.key
    }

    /// Whether rows live inside a scope value.
    pub fn scoped(&self) -> bool {
        self.def.scoped
    }

    /// The table name, quoted for SQL.
    pub fn quoted_table(&self) -> String {
        format!("\"{}\"", self.table)
    }

    /// The backup table of this kind (unquoted).
    pub fn backup_table(&self) -> String {
        format!("backup_{}", self.table)
    }

    /// Parses a key from its cursor form: the key fields' values joined
    /// by `:` (split at the first colons: only the last part may hold
    /// one). The error says what is wrong.
    pub fn parse_cursor(&self, text: &str) -> Result<Vec<String>, String> {
        let width = self.def.key.len();
        let parts: Vec<String> = if width == 1 {
            vec![text.to_owned()]
        } else {
            text.splitn(width, ':').map(str::to_owned).collect()
        };
        if parts.len() != width {
            let form: Vec<String> = self
                .def
                .key
                .iter()
                .map(|field| format!("<{field}>"))
                .collect();
            return Err(format!(
                "invalid {} cursor: {text:?} is not of the form {}",
                self.def.name,
                form.join(":")
            ));
        }
        for (position, part) in parts.iter().enumerate() {
            let label = if width == 1 {
                "id"
            } else {
                self.key_labels[position].as_str()
            };
            recon_core::domain::validate_id("id", part)
                .map_err(|invalid| format!("invalid {label}: {}", invalid.reason))?;
        }
        Ok(parts)
    }

    /// The primary key columns: the scope column (scoped kinds), then the
    /// key columns.
    pub fn primary_key(&self) -> Vec<&str> {
        let mut columns = Vec::with_capacity(self.def.key.len() + 1);
        if self.def.scoped {
            columns.push(self.scope_column.as_str());
        }
        columns.extend(self.def.key.iter().map(String::as_str));
        columns
    }
}

/// A schema resolved for the monolith (see the module docs).
#[derive(Debug, Clone)]
pub struct Model {
    schema: Schema,
    kinds: Vec<KindPlan>,
    deletion_order: Vec<usize>,
    insertion_order: Vec<usize>,
    default: bool,
}

impl Model {
    /// Resolves `schema`; the error names what the monolith cannot serve.
    pub fn new(schema: Schema) -> Result<Model, ModelError> {
        let default = &schema == Schema::default_schema();
        let scope_column = schema.scope_column();
        let mut kinds = Vec::with_capacity(schema.kinds().len());
        for (index, def) in schema.kinds().iter().enumerate() {
            kinds.push(KindPlan {
                index,
                table: def.plural.replace('-', "_"),
                scope_column: if def.scoped {
                    scope_column.clone()
                } else {
                    def.key.first().cloned().unwrap_or_default()
                },
                references: resolve_references(&schema, def)?,
                referenced_by: Vec::new(),
                colon_free: vec![false; def.key.len()],
                key_labels: def.key.iter().map(|field| key_label(def, field)).collect(),
                depth: 0,
                def: def.clone(),
            });
        }
        check_names(&kinds)?;
        link_children(&mut kinds);
        mark_colon_free(&mut kinds);
        set_depths(&schema, &mut kinds);
        let mut deletion_order: Vec<usize> = (0..kinds.len()).collect();
        // Deepest first (children before parents), file order among equals:
        // for the default schema memberships, users, groups, tenants — the
        // order of a tenant's cascade before schemas were declared.
        deletion_order.sort_by_key(|index| (std::cmp::Reverse(kinds[*index].depth), *index));
        let insertion_order = schema
            .apply_order()
            .filter_map(|def| kinds.iter().position(|kind| kind.def.name == def.name))
            .collect();
        Ok(Model {
            schema,
            kinds,
            deletion_order,
            insertion_order,
            default,
        })
    }

    /// The default schema's model.
    pub fn default_model() -> Model {
        match Model::new(Schema::default_schema().clone()) {
            Ok(model) => model,
            // The default schema's plan is checked by a unit test.
            Err(error) => unreachable!("the default schema is served: {error}"),
        }
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Whether this is the default schema (typed events, today's tables).
    pub fn is_default(&self) -> bool {
        self.default
    }

    /// The kinds in file order.
    pub fn kinds(&self) -> &[KindPlan] {
        &self.kinds
    }

    /// The kind at `index`.
    pub fn kind_at(&self, index: usize) -> &KindPlan {
        &self.kinds[index]
    }

    /// The kind named `name` (singular or plural).
    pub fn kind(&self, name: &str) -> Option<&KindPlan> {
        self.kinds
            .iter()
            .find(|kind| kind.def.name == name || kind.def.plural == name)
    }

    /// The scope kind.
    pub fn scope(&self) -> &KindPlan {
        self.kinds
            .iter()
            .find(|kind| !kind.def.scoped)
            .unwrap_or(&self.kinds[0])
    }

    /// The scoped kinds in file order.
    pub fn scoped_kinds(&self) -> impl Iterator<Item = &KindPlan> {
        self.kinds.iter().filter(|kind| kind.def.scoped)
    }

    /// Kind indexes in deletion order: children before parents.
    pub fn deletion_order(&self) -> &[usize] {
        &self.deletion_order
    }

    /// Kind indexes in insertion order: the schema's apply order (parents
    /// before children, file order among kinds free to go either way).
    pub fn insertion_order(&self) -> impl Iterator<Item = usize> + '_ {
        self.insertion_order.iter().copied()
    }
}

impl fmt::Display for Model {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "scope {}", self.scope().def.name)
    }
}

/// The name errors give a key field: `<kind> id` for a field `id`, else
/// the field's name with `_` written as a space (`group id`, `sku`).
fn key_label(kind: &KindDef, field: &str) -> String {
    if field == "id" {
        format!("{} id", kind.name)
    } else {
        field.replace('_', " ")
    }
}

fn resolve_references(schema: &Schema, def: &KindDef) -> Result<Vec<Reference>, ModelError> {
    let mut references = Vec::with_capacity(def.references.len());
    for name in &def.references {
        let Some(target_index) = schema.kinds().iter().position(|kind| &kind.name == name) else {
            continue; // Schema::parse refuses unknown references.
        };
        let target = &schema.kinds()[target_index];
        if !target.scoped {
            continue; // The scope column carries it.
        }
        let mut key_positions = Vec::with_capacity(target.key.len());
        for field in &target.key {
            let mut candidates = vec![format!("{}_{field}", target.name), field.clone()];
            if target.key.len() == 1 {
                candidates.push(target.name.clone());
            }
            let found = candidates
                .iter()
                .find_map(|candidate| def.key.iter().position(|key| key == candidate));
            match found {
                Some(position) => key_positions.push(position),
                None => {
                    return Err(ModelError::UnresolvedReference {
                        kind: def.name.clone(),
                        referenced: target.name.clone(),
                        field: field.clone(),
                        candidates: candidates.join(" or "),
                    });
                }
            }
        }
        references.push(Reference {
            kind: target_index,
            key_positions,
        });
    }
    Ok(references)
}

fn check_names(kinds: &[KindPlan]) -> Result<(), ModelError> {
    for (index, kind) in kinds.iter().enumerate() {
        let clash = |problem: String| ModelError::Table {
            kind: kind.def.name.clone(),
            table: kind.table.clone(),
            problem,
        };
        if RESERVED_TABLES.contains(&kind.table.as_str()) {
            return Err(clash("is one of the monolith's own tables".to_owned()));
        }
        if kind.table.starts_with("backup_") {
            return Err(clash("starts with backup_, as backup tables do".to_owned()));
        }
        if let Some(other) = kinds[..index]
            .iter()
            .find(|other| other.table == kind.table)
        {
            return Err(clash(format!("is also kind {:?}'s", other.def.name)));
        }
    }
    Ok(())
}

fn link_children(kinds: &mut [KindPlan]) {
    for child in 0..kinds.len() {
        for reference in 0..kinds[child].references.len() {
            let parent = kinds[child].references[reference].kind;
            kinds[parent].referenced_by.push((child, reference));
        }
    }
}

/// A key part may not hold `:` when it is a non-last part of its own
/// composite key, or when a referencing kind carries it in a position
/// that may not (repeated until nothing changes: references chain).
fn mark_colon_free(kinds: &mut [KindPlan]) {
    for kind in kinds.iter_mut() {
        let parts = kind.colon_free.len();
        for position in 0..parts.saturating_sub(1) {
            kind.colon_free[position] = true;
        }
    }
    let mut changed = true;
    while changed {
        changed = false;
        for child in 0..kinds.len() {
            for reference in kinds[child].references.clone() {
                for (parent_position, child_position) in reference.key_positions.iter().enumerate()
                {
                    if kinds[child].colon_free[*child_position]
                        && !kinds[reference.kind].colon_free[parent_position]
                    {
                        kinds[reference.kind].colon_free[parent_position] = true;
                        changed = true;
                    }
                }
            }
        }
    }
}

/// Depths in apply order: a kind is one deeper than its deepest parent
/// (the scope kind, for a kind without references).
fn set_depths(schema: &Schema, kinds: &mut [KindPlan]) {
    for def in schema.apply_order() {
        let Some(index) = kinds.iter().position(|kind| kind.def.name == def.name) else {
            continue;
        };
        if !kinds[index].def.scoped {
            continue;
        }
        let deepest_parent = kinds[index]
            .references
            .iter()
            .map(|reference| kinds[reference.kind].depth)
            .max()
            .unwrap_or(0);
        kinds[index].depth = deepest_parent + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Model {
        let schema = Schema::parse(include_str!("../../../proto/schemas/catalog.toml"))
            .expect("the catalog schema is valid");
        Model::new(schema).expect("the catalog is served")
    }

    #[test]
    fn the_default_schema_keeps_its_tables_and_cascade_order() {
        let model = Model::default_model();
        assert!(model.is_default());
        let tables: Vec<&str> = model.kinds().iter().map(|k| k.table.as_str()).collect();
        assert_eq!(tables, ["tenants", "users", "groups", "memberships"]);
        let order: Vec<&str> = model
            .deletion_order()
            .iter()
            .map(|index| model.kind_at(*index).name())
            .collect();
        assert_eq!(order, ["membership", "user", "group", "tenant"]);
        let order: Vec<&str> = model
            .insertion_order()
            .map(|index| model.kind_at(index).name())
            .collect();
        assert_eq!(order, ["tenant", "user", "group", "membership"]);
        let membership = model.kind("memberships").expect("membership");
        assert_eq!(membership.references[0].kind, 2);
        assert_eq!(membership.references[0].key_positions, [0]);
        assert_eq!(membership.references[1].key_positions, [1]);
        assert_eq!(
            membership.primary_key(),
            ["tenant_id", "group_id", "user_id"]
        );
        // A group id is a membership cursor's first part; a user id its last.
        assert_eq!(model.kind("group").expect("group").colon_free, [true]);
        assert_eq!(model.kind("user").expect("user").colon_free, [false]);
        assert_eq!(model.kind("user").expect("user").key_labels, ["user id"]);
        assert_eq!(membership.key_labels, ["group id", "user id"]);
        assert_eq!(model.scope().scope_column, "id");
        assert_eq!(
            membership.parse_cursor("g:u:1"),
            Ok(vec!["g".to_owned(), "u:1".to_owned()])
        );
        assert_eq!(
            membership.parse_cursor("g1"),
            Err(
                "invalid membership cursor: \"g1\" is not of the form <group_id>:<user_id>"
                    .to_owned()
            )
        );
        assert_eq!(
            membership.parse_cursor(":u"),
            Err("invalid group id: must not be empty".to_owned())
        );
        let user = model.kind("user").expect("user");
        assert_eq!(
            user.parse_cursor(""),
            Err("invalid id: must not be empty".to_owned())
        );
        assert_eq!(model.kind("users").expect("user").scope_column, "tenant_id");
    }

    #[test]
    fn the_catalog_resolves_its_references() {
        let model = catalog();
        assert!(!model.is_default());
        let product_tag = model.kind("product-tags").expect("product_tag");
        assert_eq!(product_tag.table, "product_tags");
        let targets: Vec<(&str, &[usize])> = product_tag
            .references
            .iter()
            .map(|reference| {
                (
                    model.kind_at(reference.kind).name(),
                    reference.key_positions.as_slice(),
                )
            })
            .collect();
        assert_eq!(targets, [("product", &[0][..]), ("tag", &[1][..])]);
        assert_eq!(model.kind("product").expect("product").colon_free, [true]);
        assert_eq!(model.kind("tag").expect("tag").colon_free, [false]);
        let order: Vec<&str> = model
            .deletion_order()
            .iter()
            .map(|index| model.kind_at(*index).name())
            .collect();
        assert_eq!(order, ["variant", "product_tag", "product", "tag", "shop"]);
        let product = model.kind("product").expect("product");
        assert_eq!(product.referenced_by, [(2, 0), (4, 0)]);
    }

    #[test]
    fn clashing_names_and_unresolved_references_are_refused() {
        let schema = |extra: &str| {
            Schema::parse(&format!(
                "scope = \"shop\"\n[[kind]]\nname = \"shop\"\nplural = \"shops\"\n\
                 table = \"t_shops\"\nkey = [\"code\"]\n{extra}"
            ))
            .expect("valid schema")
        };
        let outbox = schema(
            "[[kind]]\nname = \"box\"\nplural = \"outbox\"\ntable = \"t_box\"\nkey = [\"id\"]",
        );
        let error = Model::new(outbox).expect_err("outbox clashes");
        assert!(
            error.to_string().contains("monolith's own tables"),
            "{error}"
        );
        let scope_referenced = schema(
            "[[kind]]\nname = \"item\"\nplural = \"items\"\ntable = \"t_i\"\nkey = [\"id\"]\n\
             references = [\"shop\"]",
        );
        let model = Model::new(scope_referenced).expect("the scope column carries the shop");
        assert!(model.kind("item").expect("item").references.is_empty());
        let unresolved = schema(
            "[[kind]]\nname = \"item\"\nplural = \"items\"\ntable = \"t_i\"\nkey = [\"id\"]\n\
             [[kind]]\nname = \"note\"\nplural = \"notes\"\ntable = \"t_n\"\nkey = [\"nid\"]\n\
             references = [\"item\"]",
        );
        let error = Model::new(unresolved).expect_err("no key field for the item");
        assert!(
            error.to_string().contains("item_id or id or item"),
            "{error}"
        );
    }
}
