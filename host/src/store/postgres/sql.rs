//! Queries and rows: the helpers every part of the PostgreSQL store uses.

use std::str::FromStr;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use crate::store::{Error, Page, Result};

/// A query's parameters.
pub(super) type Params<'a> = [&'a (dyn ToSql + Sync)];

pub(super) async fn query_all<T>(
    db: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
    map: impl FnMut(&Row) -> Result<T>,
) -> Result<Vec<T>> {
    let statement = db.prepare_cached(sql).await?;
    db.query(&statement, params)
        .await?
        .iter()
        .map(map)
        .collect()
}

pub(super) async fn query_opt<T>(
    db: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
    map: impl FnOnce(&Row) -> Result<T>,
) -> Result<Option<T>> {
    let statement = db.prepare_cached(sql).await?;
    db.query_opt(&statement, params)
        .await?
        .as_ref()
        .map(map)
        .transpose()
}

pub(super) async fn execute(
    db: &impl GenericClient,
    sql: &str,
    params: &Params<'_>,
) -> Result<u64> {
    let statement = db.prepare_cached(sql).await?;
    Ok(db.execute(&statement, params).await?)
}

/// Takes the advisory lock `key` until the end of the transaction.
pub(super) async fn lock(db: &impl GenericClient, key: &str) -> Result<()> {
    execute(
        db,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        &[&key],
    )
    .await
    .map(drop)
}

pub(super) fn get<'a, T: FromSql<'a>>(row: &'a Row, column: &str) -> Result<T> {
    row.try_get(column)
        .map_err(|e| Error::Backend(format!("column {column}: {e}")))
}

/// A non-negative integer column.
pub(super) fn uint(row: &Row, column: &str) -> Result<u64> {
    let value: i64 = get(row, column)?;
    u64::try_from(value).map_err(|e| Error::Backend(format!("column {column}: {e}")))
}

/// A column holding a `u32`.
pub(super) fn small(row: &Row, column: &str) -> Result<u32> {
    let value: i64 = get(row, column)?;
    u32::try_from(value).map_err(|e| Error::Backend(format!("column {column}: {e}")))
}

pub(super) fn text_enum<T: FromStr<Err = Error>>(row: &Row, column: &str) -> Result<T> {
    get::<&str>(row, column)?.parse()
}

pub(super) fn json_column<T: serde::de::DeserializeOwned>(row: &Row, column: &str) -> Result<T> {
    serde_json::from_str(get(row, column)?)
        .map_err(|e| Error::Backend(format!("column {column}: {e}")))
}

/// `value` as an SQL integer (values beyond `i64::MAX` saturate: none occur in practice).
pub(super) fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Cuts the one extra row fetched to learn whether another page follows.
pub(super) fn page<T>(mut items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next_cursor }
}

pub(super) fn seq_cursor(cursor: Option<&String>) -> Result<Option<i64>> {
    cursor
        .map(|text| {
            text.parse::<i64>()
                .map_err(|_| Error::Invalid(format!("not a cursor of this list: {text:?}")))
        })
        .transpose()
}

/// An SQL statement assembled from optional filters. Each `?` of a condition becomes the
/// placeholder of that condition's value (so a condition may use it more than once).
pub(super) struct Filtered {
    sql: String,
    args: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Filtered {
    pub(super) fn new(select: String) -> Self {
        Self {
            sql: select,
            args: Vec::new(),
        }
    }

    pub(super) fn and<V: ToSql + Sync + Send + 'static>(
        &mut self,
        condition: &str,
        value: Option<V>,
    ) {
        if let Some(value) = value {
            self.args.push(Box::new(value));
            let placeholder = format!("${}", self.args.len());
            self.sql.push_str(" AND ");
            self.sql.push_str(&condition.replace('?', &placeholder));
        }
    }

    pub(super) async fn run<T>(
        mut self,
        db: &impl GenericClient,
        tail: &str,
        limit: usize,
        map: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.args.push(Box::new(int(limit as u64 + 1)));
        let sql = format!("{} {tail} LIMIT ${}", self.sql, self.args.len());
        let params: Vec<&(dyn ToSql + Sync)> = self
            .args
            .iter()
            .map(|arg| &**arg as &(dyn ToSql + Sync))
            .collect();
        query_all(db, &sql, &params, map).await
    }
}
