//! Building the read-model queries of the GraphQL resolvers: conditions with
//! bound parameters, the client's `filter`/`order`, and pages with their
//! total count.

use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::sql_types::BigInt;
use diesel_async::AsyncPgConnection;
use juniper::FieldError;

use crate::minilang::{
    Fields, Param, SqlFragment, filter_sql, order_sql, parse_filter, parse_order,
};

/// The largest page a list query may ask for.
pub const MAX_LIMIT: i32 = 1000;

/// A `WHERE` clause under construction: every value is a bound parameter.
#[derive(Debug, Default)]
pub struct Conditions {
    conds: Vec<String>,
    params: Vec<Param>,
    /// Whether the text holds a client's filter: such SQL is not kept as a
    /// prepared statement (its shapes are unbounded).
    from_client: bool,
}

impl Conditions {
    /// Adds a condition; `{}` in `template` stands for the value's placeholder.
    pub fn bind(&mut self, template: &str, value: Param) -> &mut Self {
        let placeholder = format!("${}", self.params.len() + 1);
        self.conds.push(template.replace("{}", &placeholder));
        self.params.push(value);
        self
    }

    /// Adds a condition with several values: the `{}`s of `template` stand,
    /// in order, for the placeholders of `values` (one `{}` per value).
    pub fn bind_each(&mut self, template: &str, values: Vec<Param>) -> &mut Self {
        debug_assert_eq!(template.matches("{}").count(), values.len());
        let mut parts = template.split("{}");
        let mut cond = parts.next().unwrap_or_default().to_owned();
        for (part, value) in parts.zip(values) {
            self.params.push(value);
            cond.push_str(&format!("${}", self.params.len()));
            cond.push_str(part);
        }
        self.conds.push(cond);
        self
    }

    /// Adds a condition without values (written by us).
    pub fn raw(&mut self, cond: &str) -> &mut Self {
        self.conds.push(cond.to_owned());
        self
    }

    /// Adds the client's `filter`, parsed against `fields`.
    pub fn filter(
        &mut self,
        filter: Option<&str>,
        fields: &Fields,
    ) -> Result<&mut Self, FieldError> {
        let Some(filter) = filter.filter(|f| !f.trim().is_empty()) else {
            return Ok(self);
        };
        let expr = parse_filter(filter).map_err(gql_error)?;
        let frag = filter_sql(&expr, fields, self.params.len() + 1).map_err(gql_error)?;
        self.conds.push(format!("({})", frag.sql));
        self.params.extend(frag.params);
        self.from_client = true;
        Ok(self)
    }

    /// The `WHERE ...` clause (empty when there is no condition).
    pub fn where_clause(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conds.join(" AND "))
        }
    }

    /// Runs `SELECT {select} FROM {from} WHERE ... {tail}` and loads the rows.
    pub async fn load<R>(
        self,
        conn: &mut AsyncPgConnection,
        select: &str,
        from: &str,
        tail: &str,
    ) -> Result<Vec<R>, FieldError>
    where
        R: QueryableByName<Pg> + Send + 'static,
    {
        use diesel_async::RunQueryDsl;
        let sql = format!("SELECT {select} FROM {from}{}{tail}", self.where_clause());
        SqlFragment {
            sql: String::new(),
            params: self.params,
        }
        .bind(manager_events::prepared(sql).cache(!self.from_client))
        .load(conn)
        .await
        .map_err(db_error)
    }
}

#[derive(Debug, QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Loads one page and the total count. `order` is the client's (checked
/// against `fields`); `tiebreak` keeps pages stable when it ties.
#[allow(clippy::too_many_arguments)]
pub async fn page<R>(
    conn: &mut AsyncPgConnection,
    conds: Conditions,
    select: &str,
    from: &str,
    order: Option<&str>,
    fields: &Fields,
    default_order: &str,
    limit: i32,
    offset: i32,
) -> Result<(Vec<R>, i32), FieldError>
where
    R: QueryableByName<Pg> + Send + 'static,
{
    use diesel_async::RunQueryDsl;
    if !(0..=MAX_LIMIT).contains(&limit) {
        return Err(gql_error(format!(
            "limit must be between 0 and {MAX_LIMIT}"
        )));
    }
    if offset < 0 {
        return Err(gql_error("offset must not be negative"));
    }
    let order_by = match order.filter(|o| !o.trim().is_empty()) {
        Some(o) => {
            let parsed = parse_order(o).map_err(gql_error)?;
            format!(
                "{}, {default_order}",
                order_sql(&parsed, fields).map_err(gql_error)?
            )
        }
        None => default_order.to_owned(),
    };
    let where_clause = conds.where_clause();
    // Text built from the client's filter or order is not kept prepared.
    let cache = !conds.from_client && order.is_none_or(|o| o.trim().is_empty());
    let n = conds.params.len();
    let params = || SqlFragment {
        sql: String::new(),
        params: conds.params.clone(),
    };
    // The count and the page apart: a window count would read every
    // matching row for each page, while the page alone stops at
    // offset + limit rows of an index.
    let count_sql = format!("SELECT count(*) AS n FROM {from}{where_clause}");
    let count: Count = params()
        .bind(manager_events::prepared(count_sql).cache(cache))
        .get_result(conn)
        .await
        .map_err(db_error)?;
    let rows: Vec<R> = if limit == 0 || i64::from(offset) >= count.n {
        Vec::new()
    } else {
        let sql = format!(
            "SELECT {select} FROM {from}{where_clause} ORDER BY {order_by} LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        params()
            .bind(manager_events::prepared(sql).cache(cache))
            .bind::<BigInt, _>(i64::from(limit))
            .bind::<BigInt, _>(i64::from(offset))
            .load(conn)
            .await
            .map_err(db_error)?
    };
    Ok((rows, i32::try_from(count.n).unwrap_or(i32::MAX)))
}

/// A GraphQL error with `message` as the client sees it.
pub fn gql_error(message: impl std::fmt::Display) -> FieldError {
    FieldError::new(message, juniper::Value::null())
}

/// A database failure as a GraphQL error. Values typed by the client that the
/// database refuses (a malformed timestamp in a filter) are the client's
/// fault and say so; anything else is reported as unavailable.
pub fn db_error(err: diesel::result::Error) -> FieldError {
    match &err {
        diesel::result::Error::DatabaseError(_, info) if is_client_value_error(info.message()) => {
            gql_error(format!("invalid value in filter: {}", info.message()))
        }
        _ => {
            tracing::warn!(error = %err, "read-model query failed");
            gql_error("The service is temporarily unavailable (database).")
        }
    }
}

fn is_client_value_error(message: &str) -> bool {
    message.starts_with("invalid input syntax") || message.contains("out of range")
}

/// A failure to get a connection.
pub fn pool_error(err: impl std::fmt::Display) -> FieldError {
    tracing::warn!(error = %err, "no database connection for a query");
    gql_error("The service is temporarily unavailable (database).")
}
