//! Turning a parsed filter or order into SQL over a list's fields.

use std::fmt::Write;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Double, Text, Timestamptz};
use uuid::Uuid;

use super::MinilangError;
use super::parse::{Expr, Op, Value};

/// How a field's values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Text.
    Text,
    /// Text holding an enum: compared without regard to case, so `"RUNNING"`
    /// and `"running"` both match.
    Enum,
    /// An integer.
    Int,
    /// A number that may have a fraction.
    Float,
    /// A boolean.
    Bool,
    /// A UUID (given as a string).
    Uuid,
    /// A timestamp (given as an ISO 8601 string or a date).
    Timestamp,
}

/// One filterable and/or orderable field of a list.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The name clients use.
    pub name: &'static str,
    /// The SQL expression it stands for (written by us, never by a client).
    pub column: &'static str,
    /// How values compare.
    pub ty: FieldType,
    /// May appear in `filter`.
    pub filter: bool,
    /// May appear in `order`.
    pub order: bool,
}

impl Field {
    /// A field usable in both `filter` and `order`.
    pub const fn new(name: &'static str, column: &'static str, ty: FieldType) -> Self {
        Field {
            name,
            column,
            ty,
            filter: true,
            order: true,
        }
    }

    /// A field usable only in `order`.
    pub const fn order_only(name: &'static str, column: &'static str, ty: FieldType) -> Self {
        Field {
            name,
            column,
            ty,
            filter: false,
            order: true,
        }
    }

    /// A field usable only in `filter`.
    pub const fn filter_only(name: &'static str, column: &'static str, ty: FieldType) -> Self {
        Field {
            name,
            column,
            ty,
            filter: true,
            order: false,
        }
    }
}

/// The fields of one list.
#[derive(Debug, Clone, Copy)]
pub struct Fields(pub &'static [Field]);

impl Fields {
    fn get(&self, name: &str) -> Option<&Field> {
        self.0.iter().find(|f| f.name == name)
    }
}

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// `text`
    Text(String),
    /// `bigint`
    Int(i64),
    /// `double precision`
    Float(f64),
    /// `boolean`
    Bool(bool),
    /// `timestamptz`
    Timestamp(DateTime<Utc>),
    /// `text[]`
    TextList(Vec<String>),
    /// `bigint[]`
    IntList(Vec<i64>),
}

/// SQL text with `$n` placeholders and the values to bind to them, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SqlFragment {
    /// The SQL.
    pub sql: String,
    /// The values for `$first..`.
    pub params: Vec<Param>,
}

impl SqlFragment {
    /// Binds the parameters, in order, to `query`.
    pub fn bind(
        self,
        mut query: manager_events::prepared::Prepared<'_>,
    ) -> manager_events::prepared::Prepared<'_> {
        for p in self.params {
            query = match p {
                Param::Text(v) => query.bind::<Text, _>(v),
                Param::Int(v) => query.bind::<BigInt, _>(v),
                Param::Float(v) => query.bind::<Double, _>(v),
                Param::Bool(v) => query.bind::<Bool, _>(v),
                Param::Timestamp(v) => query.bind::<Timestamptz, _>(v),
                Param::TextList(v) => query.bind::<Array<Text>, _>(v),
                Param::IntList(v) => query.bind::<Array<BigInt>, _>(v),
            };
        }
        query
    }
}

fn bad(field: &Field, reason: impl Into<String>) -> MinilangError {
    MinilangError::BadValue {
        field: field.name.to_owned(),
        reason: reason.into(),
    }
}

fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
            return Some(n.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|n| n.and_utc())
}

/// Converts one scalar to the field's parameter type; also returns the SQL
/// cast the placeholder needs.
fn scalar(field: &Field, v: &Value) -> Result<(Param, &'static str), MinilangError> {
    Ok(match (field.ty, v) {
        (FieldType::Text, Value::Str(s)) => (Param::Text(s.clone()), ""),
        (FieldType::Enum, Value::Str(s)) => (Param::Text(s.to_lowercase()), ""),
        (FieldType::Int, Value::Int(n)) => (Param::Int(*n), ""),
        (FieldType::Float, Value::Int(n)) => (Param::Float(*n as f64), ""),
        (FieldType::Float, Value::Float(f)) => (Param::Float(*f), ""),
        (FieldType::Bool, Value::Bool(b)) => (Param::Bool(*b), ""),
        (FieldType::Uuid, Value::Str(s)) => {
            let u: Uuid = s.parse().map_err(|_| bad(field, "not a UUID"))?;
            (Param::Text(u.to_string()), "::uuid")
        }
        (FieldType::Timestamp, Value::Str(s)) => (
            Param::Timestamp(
                parse_timestamp(s).ok_or_else(|| bad(field, "not a date or ISO 8601 time"))?,
            ),
            "",
        ),
        (ty, v) => return Err(bad(field, format!("{v:?} does not fit a {ty:?} field"))),
    })
}

struct Builder<'f> {
    fields: &'f Fields,
    out: SqlFragment,
    next: usize,
}

impl Builder<'_> {
    fn placeholder(&mut self, p: Param, cast: &str) -> String {
        self.out.params.push(p);
        let s = format!("${}{cast}", self.next);
        self.next += 1;
        s
    }

    fn expr(&mut self, e: &Expr) -> Result<(), MinilangError> {
        match e {
            Expr::Not(inner) => {
                self.out.sql.push_str("NOT (");
                self.expr(inner)?;
                self.out.sql.push(')');
            }
            Expr::And(a, b) | Expr::Or(a, b) => {
                self.out.sql.push('(');
                self.expr(a)?;
                self.out.sql.push_str(if matches!(e, Expr::And(..)) {
                    " AND "
                } else {
                    " OR "
                });
                self.expr(b)?;
                self.out.sql.push(')');
            }
            Expr::Cmp { field, op, value } => self.cmp(field, *op, value)?,
        }
        Ok(())
    }

    fn cmp(&mut self, name: &str, op: Op, value: &Value) -> Result<(), MinilangError> {
        let field = *self
            .fields
            .get(name)
            .filter(|f| f.filter)
            .ok_or_else(|| MinilangError::UnknownField(name.to_owned()))?;
        let col = if field.ty == FieldType::Enum {
            format!("lower({})", field.column)
        } else {
            field.column.to_owned()
        };
        let sql = match (op, value) {
            (Op::Eq | Op::Is, Value::Null) => format!("{} IS NULL", field.column),
            (Op::Ne | Op::IsNot, Value::Null) => format!("{} IS NOT NULL", field.column),
            (Op::Is | Op::IsNot, v) => {
                let (p, cast) = scalar(&field, v)?;
                let ph = self.placeholder(p, cast);
                let not = if op == Op::Is { "NOT " } else { "" };
                format!("{col} IS {not}DISTINCT FROM {ph}")
            }
            (Op::Eq | Op::Ne | Op::Gt | Op::Ge | Op::Lt | Op::Le, v) => {
                let (p, cast) = scalar(&field, v)?;
                let ph = self.placeholder(p, cast);
                let sym = match op {
                    Op::Eq => "=",
                    Op::Ne => "<>",
                    Op::Gt => ">",
                    Op::Ge => ">=",
                    Op::Lt => "<",
                    _ => "<=",
                };
                format!("{col} {sym} {ph}")
            }
            (Op::Contains | Op::Like | Op::ILike, Value::Str(s))
                if matches!(field.ty, FieldType::Text | FieldType::Enum) =>
            {
                let ph = self.placeholder(Param::Text(s.clone()), "");
                match op {
                    Op::Contains => format!("strpos({}, {ph}) > 0", field.column),
                    Op::Like => format!("{} LIKE {ph}", field.column),
                    _ => format!("{} ILIKE {ph}", field.column),
                }
            }
            (Op::Contains | Op::Like | Op::ILike, _) => {
                return Err(bad(
                    &field,
                    "contains/like/ilike need a text field and a string",
                ));
            }
            (Op::In, Value::List(items)) => {
                let mut texts = Vec::new();
                let mut ints = Vec::new();
                let mut cast = "";
                for item in items {
                    match scalar(&field, item)? {
                        (Param::Text(t), c) => {
                            texts.push(t);
                            cast = c;
                        }
                        (Param::Int(n), _) => ints.push(n),
                        _ => {
                            return Err(bad(
                                &field,
                                "`in` lists hold text, enum, UUID or integer values",
                            ));
                        }
                    }
                }
                let (p, cast) = if ints.is_empty() {
                    (
                        Param::TextList(texts),
                        if cast.is_empty() { "" } else { "::uuid[]" },
                    )
                } else {
                    (Param::IntList(ints), "")
                };
                let ph = self.placeholder(p, cast);
                format!("{col} = ANY({ph})")
            }
            (Op::In, _) => return Err(bad(&field, "`in` needs a list")),
        };
        self.out.sql.push_str(&sql);
        Ok(())
    }
}

/// The SQL condition for a filter; placeholders start at `$first`.
pub fn filter_sql(
    expr: &Expr,
    fields: &Fields,
    first: usize,
) -> Result<SqlFragment, MinilangError> {
    let mut b = Builder {
        fields,
        out: SqlFragment::default(),
        next: first.max(1),
    };
    b.expr(expr)?;
    Ok(b.out)
}

/// The `ORDER BY` list for an order (without the keywords), e.g.
/// `created_at DESC, name ASC`.
pub fn order_sql(order: &[(String, bool)], fields: &Fields) -> Result<String, MinilangError> {
    let mut sql = String::new();
    for (i, (name, desc)) in order.iter().enumerate() {
        let field = fields
            .get(name)
            .filter(|f| f.order)
            .ok_or_else(|| MinilangError::UnknownField(name.clone()))?;
        if i > 0 {
            sql.push_str(", ");
        }
        let _ = write!(
            sql,
            "{} {}",
            field.column,
            if *desc { "DESC" } else { "ASC" }
        );
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minilang::{parse_filter, parse_order};

    const FIELDS: Fields = Fields(&[
        Field::new("email", "u.email", FieldType::Text),
        Field::new("status", "u.status", FieldType::Enum),
        Field::new("uuid", "u.uuid", FieldType::Uuid),
        Field::new("created_at", "u.created_at", FieldType::Timestamp),
        Field::new("is_active", "u.is_active", FieldType::Bool),
        Field::new("rate_limit", "k.rate_limit", FieldType::Int),
        Field::filter_only("description", "u.description", FieldType::Text),
    ]);

    fn sql(filter: &str) -> SqlFragment {
        filter_sql(&parse_filter(filter).unwrap(), &FIELDS, 3).unwrap()
    }

    #[test]
    fn values_are_always_bound() {
        let f = sql(r#"email ilike "%'; DROP TABLE users; --%" & status == "RUNNING""#);
        assert_eq!(f.sql, "(u.email ILIKE $3 AND lower(u.status) = $4)");
        assert_eq!(
            f.params,
            vec![
                Param::Text("%'; DROP TABLE users; --%".into()),
                Param::Text("running".into())
            ]
        );
    }

    #[test]
    fn operators_map_to_sql() {
        assert_eq!(sql("email == null").sql, "u.email IS NULL");
        assert_eq!(sql("email isnot null").sql, "u.email IS NOT NULL");
        assert_eq!(
            sql("is_active is true").sql,
            "u.is_active IS NOT DISTINCT FROM $3"
        );
        assert_eq!(sql(r#"email contains "x""#).sql, "strpos(u.email, $3) > 0");
        assert_eq!(
            sql("!(rate_limit >= 10 | rate_limit < 0)").sql,
            "NOT ((k.rate_limit >= $3 OR k.rate_limit < $4))"
        );
        assert_eq!(
            sql(r#"status in ["RUNNING", "error"]"#).params,
            vec![Param::TextList(vec!["running".into(), "error".into()])]
        );
        assert_eq!(sql("rate_limit in [1, 2]").sql, "k.rate_limit = ANY($3)");
        let u = sql(r#"uuid in ["00000000-0000-0000-0000-000000000001"]"#);
        assert_eq!(u.sql, "u.uuid = ANY($3::uuid[])");
        let t = sql(r#"created_at >= "2024-01-15""#);
        assert_eq!(
            t.params,
            vec![Param::Timestamp(
                parse_timestamp("2024-01-15T00:00:00Z").unwrap()
            )]
        );
    }

    #[test]
    fn unknown_fields_and_misfits_are_refused() {
        let err = |f: &str| filter_sql(&parse_filter(f).unwrap(), &FIELDS, 1).unwrap_err();
        assert_eq!(
            err("password == \"x\""),
            MinilangError::UnknownField("password".into())
        );
        assert!(matches!(
            err("rate_limit == \"ten\""),
            MinilangError::BadValue { .. }
        ));
        assert!(matches!(
            err("uuid == \"not-a-uuid\""),
            MinilangError::BadValue { .. }
        ));
        assert!(matches!(
            err("created_at > \"yesterday\""),
            MinilangError::BadValue { .. }
        ));
        assert!(matches!(
            err("rate_limit like \"1%\""),
            MinilangError::BadValue { .. }
        ));
        assert!(matches!(
            err("email in \"x\""),
            MinilangError::BadValue { .. }
        ));
        assert!(matches!(
            err("email > null"),
            MinilangError::BadValue { .. }
        ));
        assert_eq!(
            order_sql(&parse_order("description").unwrap(), &FIELDS).unwrap_err(),
            MinilangError::UnknownField("description".into()),
            "filter-only fields do not order"
        );
        assert_eq!(
            order_sql(&parse_order("-created_at,email").unwrap(), &FIELDS).unwrap(),
            "u.created_at DESC, u.email ASC"
        );
    }

    proptest::proptest! {
        /// Whatever the client sends, the SQL is built only from our column
        /// expressions, operators and placeholders.
        #[test]
        fn no_client_text_reaches_the_sql(value in "[^\"\\\\]{0,40}", field in "(email|status|description)") {
            let filter = format!("{field} == \"{value}\" | {field} like \"{value}\"");
            if let Ok(expr) = parse_filter(&filter) {
                let f = filter_sql(&expr, &FIELDS, 1).unwrap();
                let allowed = |c: char| c.is_ascii_alphanumeric() || " ._()$=<>".contains(c);
                proptest::prop_assert!(f.sql.chars().all(allowed), "{}", f.sql);
            }
        }
    }
}
