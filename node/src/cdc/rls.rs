//! Row Level Security, per subscriber: may this JWT see this row? Asked of PostgreSQL itself, in one
//! pipelined round trip per (change, distinct claims): a read-only transaction that sets `role` and
//! `request.jwt.claims` (so `auth.uid()` / `auth.jwt()` policies work unchanged), selects the row by
//! primary key, and rolls back.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::catalog::{quote_ident, TableMeta};

/// Who is asking: the role and the claims JSON of a subscriber's token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Viewer {
    pub role: String,
    pub claims_json: String,
    pub sub: Option<String>,
}

/// `select exists(select 1 from t where pk1 = $1::type1 and …)`, for a table.
pub fn visibility_query(table: &TableMeta) -> String {
    let conditions: Vec<String> = table
        .columns
        .iter()
        .filter(|c| c.primary_key)
        .enumerate()
        .map(|(i, c)| format!("{} = ${}::text::{}", quote_ident(&c.name), i + 1, c.sql_type))
        .collect();
    format!("select exists(select 1 from {} where {})", table.qualified_name(), conditions.join(" and "))
}

const CONTEXT: &str = "select set_config('role', $1, true), set_config('request.jwt.claims', $2, true), \
    set_config('request.jwt.claim.sub', $3, true), set_config('request.jwt.claim.role', $1, true)";

/// Prepared statements, so a check is one pipelined round trip (prepared once per table).
#[derive(Default)]
pub struct RlsStatements {
    context: Option<Statement>,
    by_table: HashMap<u32, Statement>,
}

impl RlsStatements {
    /// Forgets a table's statement (its definition changed).
    pub fn forget(&mut self, oid: u32) {
        self.by_table.remove(&oid);
    }

    /// Whether `viewer` can see the row with primary key `pk` (text values, in key order).
    pub async fn row_visible(
        &mut self,
        client: &Client,
        table: &TableMeta,
        pk: &[String],
        viewer: &Viewer,
    ) -> Result<bool, tokio_postgres::Error> {
        let context = match &self.context {
            Some(statement) => statement.clone(),
            None => self.context.insert(client.prepare(CONTEXT).await?).clone(),
        };
        let check = match self.by_table.get(&table.oid) {
            Some(statement) => statement.clone(),
            None => {
                let statement = client.prepare(&visibility_query(table)).await?;
                self.by_table.insert(table.oid, statement.clone());
                statement
            }
        };
        let params: Vec<&(dyn ToSql + Sync)> = pk.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let sub = viewer.sub.clone().unwrap_or_default();
        let context_params: [&(dyn ToSql + Sync); 3] = [&viewer.role, &viewer.claims_json, &sub];
        let begin = client.batch_execute("begin read only");
        let set = client.query(&context, &context_params);
        let visible = client.query_one(&check, &params);
        let end = client.batch_execute("rollback");
        let (begun, set, visible, ended) = tokio::join!(begin, set, visible, end);
        begun?;
        set?;
        ended?;
        Ok(visible?.get(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdc::catalog::ColumnMeta;

    #[test]
    fn query_uses_every_key_column_with_its_type() {
        let col = |name: &str, sql_type: &str, primary_key: bool| ColumnMeta {
            name: name.into(),
            typname: sql_type.into(),
            sql_type: sql_type.into(),
            primary_key,
        };
        let table = TableMeta {
            oid: 1,
            schema: "public".into(),
            name: "we\"ird".into(),
            columns: vec![col("a", "integer", true), col("b", "text", false), col("c", "uuid", true)],
            rls: true,
        };
        assert_eq!(
            visibility_query(&table),
            "select exists(select 1 from \"public\".\"we\"\"ird\" where \"a\" = $1::text::integer and \"c\" = $2::text::uuid)"
        );
    }
}
