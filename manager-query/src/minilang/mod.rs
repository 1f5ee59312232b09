//! The `filter` and `order` arguments of list queries (API spec §5.2).
//!
//! ```text
//! filter := expr
//! expr   := "!" expr | NAME OP value | expr "&" expr | expr "|" expr | "(" expr ")"
//! OP     := == != > >= < <= contains in is isnot like ilike
//! value  := "JSON string" | number | "[" value ("," value)* "]" | null | true | false
//! order  := ("+"|"-")? NAME ("," ("+"|"-")? NAME)*
//! ```
//!
//! `&` binds tighter than `|` (the reference leaves precedence unspecified;
//! this is what people expect from `a | b & c`). Names are looked up in the
//! list's [`Fields`]: an unknown name is an error, and a name maps to a fixed
//! SQL expression written by us. Every value becomes a bound parameter, so no
//! text from the request ever reaches the SQL string.
//!
//! Limits: 4,096 bytes of filter, 32 levels of nesting, 1,000 array items.

mod parse;
mod sql;

pub use parse::{Expr, Op, Value, parse_filter, parse_order};
pub use sql::{Field, FieldType, Fields, Param, SqlFragment, filter_sql, order_sql};

/// Why a `filter` or `order` argument was refused. The message is shown to the
/// client as-is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MinilangError {
    /// The text does not follow the grammar.
    #[error("invalid filter/order syntax at byte {at}: {reason}")]
    Syntax {
        /// Byte offset of the problem.
        at: usize,
        /// What was expected.
        reason: String,
    },
    /// The name is not a filterable/orderable field of this list.
    #[error("unknown field name {0:?}")]
    UnknownField(String),
    /// The value does not fit the field or the operator.
    #[error("invalid value for {field:?}: {reason}")]
    BadValue {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
    /// Too long or too deeply nested.
    #[error("the filter is too complex: {0}")]
    TooComplex(&'static str),
}

impl From<MinilangError> for manager_events::Problem {
    fn from(err: MinilangError) -> Self {
        manager_events::Problem::new(manager_events::ProblemKind::InvalidApiParams)
            .msg(err.to_string())
    }
}
