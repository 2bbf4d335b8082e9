//! sea-orm entities of the monolith's own tables: the meta counter, the
//! outbox and the backups' directory. The data tables follow the schema and
//! are read and written with the statements of `crate::sql`. Versions are
//! stored as two BIGINT columns.

#![allow(missing_docs)]

/// `meta`: the single row (`id = 1`) holding the current generation and the
/// sequence counter.
pub mod meta {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "meta")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub generation: i64,
        pub sequence: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `outbox`: one protobuf `ChangeEvent` per committed change.
pub mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub tenant_id: String,
        pub generation: i64,
        pub sequence: i64,
        pub payload: Vec<u8>,
        pub published_at_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `backups`: one row per backup; the data lives in the `backup_*` tables.
pub mod backup {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "backups")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub created_at_ms: i64,
        pub generation: i64,
        pub sequence: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
