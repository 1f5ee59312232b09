//! Raw SQL that PostgreSQL plans once per connection.
//!
//! `diesel::sql_query` marks every query unsafe to cache, so each call is
//! parsed, planned and described anew — an extra round trip and a planner
//! run for what is, on the hot paths, the same text every time. [`prepared`]
//! builds the same kind of query (bind with `.bind::<SqlType, _>(value)`,
//! load into `QueryableByName` rows) but lets the connection keep it as a
//! prepared statement keyed by its text.
//!
//! Keep it for SQL whose text is fixed (or drawn from a small fixed set):
//! every distinct text becomes a statement kept for the life of the
//! connection. Text assembled from client input — filters, orders — is run
//! with [`Prepared::cache`]`(false)`, planned anew like `sql_query`.
//!
//! Placeholders are `$1`, `$2`, …; one may appear several times and in any
//! order. (`$` followed by a digit inside a quoted literal is left alone.)

use std::borrow::Cow;

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};

/// A raw SQL query that may be cached as a prepared statement.
#[must_use = "queries are only executed when run"]
pub struct Prepared<'q> {
    sql: Cow<'static, str>,
    segments: Vec<Segment>,
    binds: Vec<Box<dyn BindValue + Send + 'q>>,
    cache: bool,
}

impl std::fmt::Debug for Prepared<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("sql", &self.sql)
            .field("binds", &self.binds.len())
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
enum Segment {
    /// A byte range of the text.
    Text(usize, usize),
    /// A placeholder: the index of its bind.
    Param(usize),
}

/// A query over `sql`, with placeholders bound in order of their numbers
/// by [`Prepared::bind`].
pub fn prepared<'q>(sql: impl Into<Cow<'static, str>>) -> Prepared<'q> {
    let sql = sql.into();
    let segments = split(&sql);
    Prepared {
        sql,
        segments,
        binds: Vec::new(),
        cache: true,
    }
}

/// Splits SQL text at its `$n` placeholders (outside quoted literals).
fn split(sql: &str) -> Vec<Segment> {
    let bytes = sql.as_bytes();
    let mut segments = Vec::new();
    let (mut start, mut i) = (0, 0);
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let mut j = i + 1;
                let mut n = 0usize;
                while let Some(d) = bytes.get(j).filter(|d| d.is_ascii_digit()) {
                    n = n * 10 + usize::from(d - b'0');
                    j += 1;
                }
                if start < i {
                    segments.push(Segment::Text(start, i));
                }
                segments.push(Segment::Param(n.saturating_sub(1)));
                start = j;
                i = j;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    if start < bytes.len() {
        segments.push(Segment::Text(start, bytes.len()));
    }
    segments
}

impl<'q> Prepared<'q> {
    /// Whether the connection may keep the statement (default: yes). Pass
    /// `false` for text whose shapes are unbounded.
    pub fn cache(mut self, cache: bool) -> Self {
        self.cache = cache;
        self
    }

    /// Binds the next placeholder (`$1` first) to `value` as SQL type `ST`.
    pub fn bind<ST, V>(mut self, value: V) -> Self
    where
        Pg: HasSqlType<ST>,
        V: ToSql<ST, Pg> + Send + 'q,
        ST: Send + 'static,
    {
        self.binds.push(Box::new(Typed::<ST, V> {
            value,
            _marker: std::marker::PhantomData,
        }));
        self
    }
}

trait BindValue {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

struct Typed<ST, V> {
    value: V,
    _marker: std::marker::PhantomData<fn() -> ST>,
}

impl<ST, V> BindValue for Typed<ST, V>
where
    Pg: HasSqlType<ST>,
    V: ToSql<ST, Pg>,
{
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, V>(&self.value)
    }
}

impl QueryFragment<Pg> for Prepared<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        if !self.cache {
            out.unsafe_to_cache_prepared();
        }
        for segment in &self.segments {
            match *segment {
                Segment::Text(from, to) => out.push_sql(&self.sql[from..to]),
                Segment::Param(i) => {
                    let bind = self.binds.get(i).ok_or_else(|| {
                        diesel::result::Error::QueryBuilderError(
                            format!("placeholder ${} has no bound value", i + 1).into(),
                        )
                    })?;
                    bind.push(&mut out)?;
                }
            }
        }
        Ok(())
    }
}

impl QueryId for Prepared<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Prepared<'_> {
    type SqlType = Untyped;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: &str) -> String {
        split(sql)
            .iter()
            .map(|s| match *s {
                Segment::Text(a, b) => sql[a..b].to_owned(),
                Segment::Param(i) => format!("<{i}>"),
            })
            .collect()
    }

    #[test]
    fn placeholders_are_split_out_and_literals_left_alone() {
        assert_eq!(
            shape("SELECT a FROM t WHERE b = $2 AND c = $1 OR d = $2"),
            "SELECT a FROM t WHERE b = <1> AND c = <0> OR d = <1>"
        );
        assert_eq!(
            shape("SELECT '$1', \"$2\" , $10"),
            "SELECT '$1', \"$2\" , <9>"
        );
        assert_eq!(shape("SELECT $$"), "SELECT $$");
    }
}
