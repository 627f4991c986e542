//! Row changes as the pipeline carries them, and the `data` object of a `postgres_changes` message
//! (PROTOCOL.md §5.3, §5.6) built from them.
//!
//! Values stay in pgoutput's text form until a payload is built: filters compare text cast by type, and
//! the JSON for a given column selection is built once and shared by every recipient of that selection.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::table::TableMeta;
use super::values;

/// INSERT, UPDATE or DELETE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    Insert,
    Update,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Insert => "INSERT",
            ChangeKind::Update => "UPDATE",
            ChangeKind::Delete => "DELETE",
        }
    }
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cell {
    Null,
    /// An unchanged TOASTed value pgoutput did not send.
    Unchanged,
    Text(Bytes),
}

impl Cell {
    fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// The old tuple of an UPDATE or DELETE: only the replica identity (key) or every column (FULL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldRow {
    pub full: bool,
    pub cells: Vec<Cell>,
}

/// One row change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub table: Arc<TableMeta>,
    pub new: Option<Vec<Cell>>,
    pub old: Option<OldRow>,
}

/// The changes of one committed transaction, in commit order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transaction {
    /// The transaction id (32-bit, as pgoutput sends it).
    pub xid: u32,
    /// End of the commit record: acknowledged to PostgreSQL once the transaction is handed off.
    pub end_lsn: u64,
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub commit_timestamp: Arc<str>,
    pub changes: Vec<Change>,
}

/// Which columns a recipient may see: its role's SELECT privileges and its subscription's `select`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Projection {
    /// Per column: the role may SELECT it.
    pub selectable: Vec<bool>,
    /// `select` of the subscription (primary-key columns are always included).
    pub select: Option<Vec<String>>,
}

impl Projection {
    fn includes(&self, table: &TableMeta, index: usize) -> bool {
        let column = &table.columns[index];
        self.selectable.get(index).copied().unwrap_or(false)
            && match &self.select {
                None => true,
                Some(names) => column.primary_key || names.contains(&column.name),
            }
    }
}

/// Fields of an oversized record keep only values whose JSON is at most this long.
const OVERSIZED_FIELD_BYTES: usize = 64;

impl Change {
    /// The values filters are evaluated against: the new row, or the old row for DELETE.
    pub fn filter_value(&self, column: &str) -> Option<(&str, Option<&str>)> {
        let index = self.table.columns.iter().position(|c| c.name == column)?;
        let typname = self.table.columns[index].typname.as_str();
        let cell = match self.kind {
            ChangeKind::Delete => self.old_cell(index)?,
            _ => match self.new.as_ref()?.get(index)? {
                Cell::Unchanged => self.old_cell(index)?,
                cell => cell,
            },
        };
        match cell {
            Cell::Null => Some((typname, None)),
            Cell::Text(_) => Some((typname, cell.text())),
            Cell::Unchanged => None,
        }
    }

    /// A column of the old row, if the old row carries it.
    fn old_cell(&self, index: usize) -> Option<&Cell> {
        let old = self.old.as_ref()?;
        if !old.full && !self.table.columns[index].primary_key {
            return None;
        }
        old.cells.get(index).filter(|c| **c != Cell::Unchanged)
    }

    /// Primary-key values as text (from the new row, or the old one for DELETE), for RLS checks.
    pub fn primary_key(&self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for (index, column) in self.table.columns.iter().enumerate() {
            if !column.primary_key {
                continue;
            }
            let cell = match self.kind {
                ChangeKind::Delete => self.old_cell(index),
                _ => self.new.as_ref().and_then(|n| n.get(index)),
            };
            out.push(cell?.text()?.to_owned());
        }
        (!out.is_empty()).then_some(out)
    }

    /// The `data` object of a `postgres_changes` message for one projection.
    pub fn data_json(
        &self,
        commit_timestamp: &str,
        projection: &Projection,
        max_record_bytes: usize,
    ) -> String {
        let table = &self.table;
        let head = |commit_ts: Value| {
            let mut map = serde_json::Map::new();
            map.insert("schema".into(), table.schema.clone().into());
            map.insert("table".into(), table.name.clone().into());
            map.insert("commit_timestamp".into(), commit_ts);
            map.insert("type".into(), self.kind.as_str().into());
            map
        };
        let pk_hidden = table
            .columns
            .iter()
            .enumerate()
            .any(|(i, c)| c.primary_key && !projection.selectable.get(i).copied().unwrap_or(false));
        let error = if !table.has_primary_key() && self.kind != ChangeKind::Delete {
            Some("Error 400: Bad Request, no primary key")
        } else if pk_hidden {
            Some("Error 401: Unauthorized")
        } else {
            None
        };
        if let Some(error) = error {
            let mut map = head(Value::Null);
            map.insert("columns".into(), Value::Array(Vec::new()));
            map.insert("errors".into(), serde_json::json!([error]));
            if self.kind != ChangeKind::Delete {
                map.insert("record".into(), Value::Object(Default::default()));
            }
            if self.kind != ChangeKind::Insert {
                map.insert("old_record".into(), Value::Object(Default::default()));
            }
            return Value::Object(map).to_string();
        }
        let included: Vec<usize> =
            (0..table.columns.len()).filter(|i| projection.includes(table, *i)).collect();
        let columns: Vec<Value> = included
            .iter()
            .map(|&i| serde_json::json!({"name": table.columns[i].name, "type": table.columns[i].typname}))
            .collect();
        let record = match self.kind {
            ChangeKind::Delete => None,
            _ => Some(self.record_fields(&included)),
        };
        let old_record = match self.kind {
            ChangeKind::Insert => None,
            _ => Some(self.old_record_fields(&included)),
        };
        let size: usize =
            record.iter().chain(old_record.iter()).flatten().map(|(k, v)| k.len() + v.len() + 4).sum();
        let oversized = size > max_record_bytes;
        let render = |fields: &[(String, String)]| {
            let mut out = String::from("{");
            for (name, json) in fields.iter().filter(|(_, v)| !oversized || v.len() <= OVERSIZED_FIELD_BYTES)
            {
                if out.len() > 1 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(name).expect("string"));
                out.push(':');
                out.push_str(json);
            }
            out.push('}');
            out
        };
        let mut out = Value::Object(head(Value::String(commit_timestamp.to_owned()))).to_string();
        out.pop(); // reopen the object to append pre-rendered JSON
        out.push_str(",\"columns\":");
        out.push_str(&Value::Array(columns).to_string());
        out.push_str(",\"errors\":");
        out.push_str(if oversized { "[\"Error 413: Payload Too Large\"]" } else { "null" });
        if let Some(record) = &record {
            out.push_str(",\"record\":");
            out.push_str(&render(record));
        }
        if let Some(old) = &old_record {
            out.push_str(",\"old_record\":");
            out.push_str(&render(old));
        }
        out.push('}');
        out
    }

    fn json_of(&self, index: usize, cell: &Cell) -> Option<String> {
        match cell {
            Cell::Null => Some("null".to_owned()),
            Cell::Unchanged => None,
            Cell::Text(_) => Some(values::to_json(&self.table.columns[index].typname, cell.text()?)),
        }
    }

    fn record_fields(&self, included: &[usize]) -> Vec<(String, String)> {
        let Some(new) = &self.new else { return Vec::new() };
        included
            .iter()
            .filter_map(|&i| {
                let cell = match new.get(i)? {
                    Cell::Unchanged => self.old.as_ref().filter(|o| o.full).and_then(|o| o.cells.get(i))?,
                    cell => cell,
                };
                Some((self.table.columns[i].name.clone(), self.json_of(i, cell)?))
            })
            .collect()
    }

    fn old_record_fields(&self, included: &[usize]) -> Vec<(String, String)> {
        let key_only = |i: usize| self.table.columns[i].primary_key;
        // With RLS, a DELETE is not checked against the row, so only its key is revealed (as the reference).
        let rls_delete = self.table.rls && self.kind == ChangeKind::Delete;
        let source: Option<(&[Cell], bool)> = match (&self.old, &self.new) {
            (Some(old), _) => Some((&old.cells, old.full && !rls_delete)),
            (None, Some(new)) => Some((new, false)),
            (None, None) => None,
        };
        let Some((cells, full)) = source else { return Vec::new() };
        included
            .iter()
            .filter(|&&i| full || key_only(i))
            .filter_map(|&i| Some((self.table.columns[i].name.clone(), self.json_of(i, cells.get(i)?)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::table::ColumnMeta;

    fn table(rls: bool, pk: bool) -> Arc<TableMeta> {
        let col = |name: &str, typname: &str, primary_key: bool| ColumnMeta {
            name: name.into(),
            typname: typname.into(),
            sql_type: typname.into(),
            primary_key,
        };
        Arc::new(TableMeta {
            oid: 1,
            schema: "public".into(),
            name: "todos".into(),
            columns: vec![col("id", "int4", pk), col("title", "text", false), col("done", "bool", false)],
            rls,
        })
    }

    fn text(s: &str) -> Cell {
        Cell::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn all(n: usize) -> Projection {
        Projection { selectable: vec![true; n], select: None }
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn insert_update_delete_shapes() {
        let t = table(false, true);
        let insert = Change {
            kind: ChangeKind::Insert,
            table: t.clone(),
            new: Some(vec![text("1"), text("hi"), text("f")]),
            old: None,
        };
        let data = parse(&insert.data_json("2026-01-01T00:00:00.000Z", &all(3), 1 << 20));
        assert_eq!(
            data,
            serde_json::json!({"schema": "public", "table": "todos", "commit_timestamp": "2026-01-01T00:00:00.000Z",
                "type": "INSERT", "columns": [{"name": "id", "type": "int4"}, {"name": "title", "type": "text"},
                {"name": "done", "type": "bool"}], "errors": null, "record": {"id": 1, "title": "hi", "done": false}})
        );
        let update = Change {
            kind: ChangeKind::Update,
            table: t.clone(),
            new: Some(vec![text("1"), text("new"), text("t")]),
            old: None,
        };
        let data = parse(&update.data_json("ts", &all(3), 1 << 20));
        assert_eq!(data["old_record"], serde_json::json!({"id": 1}));
        assert_eq!(data["record"]["title"], "new");
        let delete = Change {
            kind: ChangeKind::Delete,
            table: t.clone(),
            new: None,
            old: Some(OldRow { full: true, cells: vec![text("1"), text("x"), Cell::Null] }),
        };
        let data = parse(&delete.data_json("ts", &all(3), 1 << 20));
        assert_eq!(data["old_record"], serde_json::json!({"id": 1, "title": "x", "done": null}));
        assert!(data.get("record").is_none());
        assert_eq!(delete.filter_value("title"), Some(("text", Some("x"))));
        assert_eq!(delete.primary_key(), Some(vec!["1".to_owned()]));
    }

    #[test]
    fn projection_select_and_errors() {
        let t = table(false, true);
        let insert = Change {
            kind: ChangeKind::Insert,
            table: t.clone(),
            new: Some(vec![text("1"), text("hi"), text("f")]),
            old: None,
        };
        let only_done = Projection { selectable: vec![true; 3], select: Some(vec!["done".into()]) };
        let data = parse(&insert.data_json("ts", &only_done, 1 << 20));
        assert_eq!(data["record"], serde_json::json!({"id": 1, "done": false}));
        let hidden_title = Projection { selectable: vec![true, false, true], select: None };
        let data = parse(&insert.data_json("ts", &hidden_title, 1 << 20));
        assert_eq!(data["columns"].as_array().unwrap().len(), 2);
        let hidden_pk = Projection { selectable: vec![false, true, true], select: None };
        let data = parse(&insert.data_json("ts", &hidden_pk, 1 << 20));
        assert_eq!(data["errors"], serde_json::json!(["Error 401: Unauthorized"]));
        assert_eq!(data["commit_timestamp"], Value::Null);
        let no_pk = Change { table: table(false, false), ..insert.clone() };
        let data = parse(&no_pk.data_json("ts", &all(3), 1 << 20));
        assert_eq!(data["errors"], serde_json::json!(["Error 400: Bad Request, no primary key"]));
        assert_eq!(data["record"], serde_json::json!({}));
    }

    #[test]
    fn oversized_records_keep_short_fields() {
        let t = table(false, true);
        let big = "x".repeat(500);
        let insert = Change {
            kind: ChangeKind::Insert,
            table: t,
            new: Some(vec![text("1"), text(&big), text("t")]),
            old: None,
        };
        let data = parse(&insert.data_json("ts", &all(3), 100));
        assert_eq!(data["errors"], serde_json::json!(["Error 413: Payload Too Large"]));
        assert_eq!(data["record"], serde_json::json!({"id": 1, "done": true}));
    }
}
