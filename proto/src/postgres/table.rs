//! A published table as the change stream describes it: its columns (name, type, primary key) in
//! tuple order, and whether Row Level Security applies. The node reads it from PostgreSQL's catalog;
//! changes, filters and payloads only read it, so it lives with them as plain data.

use serde::{Deserialize, Serialize};

/// A column as deliveries describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMeta {
    pub name: String,
    /// `pg_type.typname` (`int4`, `text`, `_int4`): what `columns[].type` says and how values are typed.
    pub typname: String,
    /// `format_type(…)`: the type as SQL can cast to it (`character varying(20)`, `public.mood`).
    pub sql_type: String,
    pub primary_key: bool,
}

/// A published table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMeta {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// In `attnum` order, as pgoutput sends tuples.
    pub columns: Vec<ColumnMeta>,
    /// `relrowsecurity`: visibility must be checked per subscriber.
    pub rls: bool,
}

impl TableMeta {
    pub fn has_primary_key(&self) -> bool {
        self.columns.iter().any(|c| c.primary_key)
    }

    pub fn column(&self, name: &str) -> Option<&ColumnMeta> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// `"schema"."table"`, quoted for SQL.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
