//! Tokenizer and recursive-descent parser of the mini-languages.

use super::MinilangError;

const MAX_LEN: usize = 4096;
const MAX_DEPTH: usize = 32;
const MAX_LIST: usize = 1000;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `contains` (substring)
    Contains,
    /// `in` (one of a list)
    In,
    /// `is` (`null`, `true`, `false`)
    Is,
    /// `isnot`
    IsNot,
    /// `like` (SQL wildcards `%` and `_`)
    Like,
    /// `ilike` (case-insensitive `like`)
    ILike,
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// A JSON string.
    Str(String),
    /// `[a, b, ...]`
    List(Vec<Value>),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `!e`
    Not(Box<Expr>),
    /// `a & b`
    And(Box<Expr>, Box<Expr>),
    /// `a | b`
    Or(Box<Expr>, Box<Expr>),
    /// `name OP value`
    Cmp {
        /// The field name.
        field: String,
        /// The operator.
        op: Op,
        /// The value.
        value: Value,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Not,
    And,
    Or,
    Op(Op),
    Word(String),
    Str(String),
    Num(Value),
}

fn syntax(at: usize, reason: impl Into<String>) -> MinilangError {
    MinilangError::Syntax {
        at,
        reason: reason.into(),
    }
}

fn tokenize(input: &str) -> Result<Vec<(usize, Tok)>, MinilangError> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let two = |s: &str| input[i..].starts_with(s);
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b'[' => Tok::LBracket,
            b']' => Tok::RBracket,
            b',' => Tok::Comma,
            b'&' => Tok::And,
            b'|' => Tok::Or,
            _ if two("==") => Tok::Op(Op::Eq),
            _ if two("!=") => Tok::Op(Op::Ne),
            _ if two(">=") => Tok::Op(Op::Ge),
            _ if two("<=") => Tok::Op(Op::Le),
            b'!' => Tok::Not,
            b'>' => Tok::Op(Op::Gt),
            b'<' => Tok::Op(Op::Lt),
            b'"' => {
                // A JSON string: find its end, honouring escapes, then let
                // serde_json decode the escapes.
                let mut j = i + 1;
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                if j >= bytes.len() {
                    return Err(syntax(start, "unterminated string"));
                }
                let s: String = serde_json::from_str(&input[i..=j])
                    .map_err(|e| syntax(start, format!("bad string: {e}")))?;
                i = j + 1;
                out.push((start, Tok::Str(s)));
                continue;
            }
            b'-' | b'+' | b'0'..=b'9' => {
                let mut j = i + 1;
                while j < bytes.len()
                    && (bytes[j].is_ascii_alphanumeric() || matches!(bytes[j], b'.' | b'-' | b'+'))
                {
                    // Stop a sign that starts the next token (e.g. "1-2" is not allowed anyway).
                    j += 1;
                }
                let text = &input[i..j];
                let value = if let Ok(n) = text.parse::<i64>() {
                    Value::Int(n)
                } else if let Ok(f) = text.parse::<f64>() {
                    if !f.is_finite() {
                        return Err(syntax(start, "number out of range"));
                    }
                    Value::Float(f)
                } else {
                    return Err(syntax(start, format!("bad number {text:?}")));
                };
                i = j;
                out.push((start, Tok::Num(value)));
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i + 1;
                while j < bytes.len()
                    && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_' || bytes[j] == b'.')
                {
                    j += 1;
                }
                let word = &input[i..j];
                i = j;
                let tok = match word {
                    "contains" => Tok::Op(Op::Contains),
                    "in" => Tok::Op(Op::In),
                    "is" => Tok::Op(Op::Is),
                    "isnot" => Tok::Op(Op::IsNot),
                    "like" => Tok::Op(Op::Like),
                    "ilike" => Tok::Op(Op::ILike),
                    _ => Tok::Word(word.to_owned()),
                };
                out.push((start, tok));
                continue;
            }
            _ => {
                let ch = input[i..].chars().next().unwrap_or('?');
                return Err(syntax(start, format!("unexpected character {ch:?}")));
            }
        };
        i += match tok {
            Tok::Op(Op::Eq | Op::Ne | Op::Ge | Op::Le) => 2,
            _ => 1,
        };
        out.push((start, tok));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(at, _)| *at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    fn or_expr(&mut self) -> Result<Expr, MinilangError> {
        let mut left = self.and_expr()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let right = self.and_expr()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, MinilangError> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, MinilangError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(MinilangError::TooComplex("more than 32 levels of nesting"));
        }
        let at = self.at();
        let e = match self.next() {
            Some(Tok::Not) => Expr::Not(Box::new(self.unary()?)),
            Some(Tok::LParen) => {
                let e = self.or_expr()?;
                if self.next() != Some(Tok::RParen) {
                    return Err(syntax(self.at(), "expected ')'"));
                }
                e
            }
            Some(Tok::Word(field)) => {
                let op = match self.next() {
                    Some(Tok::Op(op)) => op,
                    _ => return Err(syntax(self.at(), "expected an operator")),
                };
                let value = self.value(true)?;
                Expr::Cmp { field, op, value }
            }
            _ => return Err(syntax(at, "expected a field name, '!' or '('")),
        };
        self.depth -= 1;
        Ok(e)
    }

    fn value(&mut self, allow_list: bool) -> Result<Value, MinilangError> {
        let at = self.at();
        match self.next() {
            Some(Tok::Str(s)) => Ok(Value::Str(s)),
            Some(Tok::Num(v)) => Ok(v),
            Some(Tok::Word(w)) if w == "null" => Ok(Value::Null),
            Some(Tok::Word(w)) if w == "true" => Ok(Value::Bool(true)),
            Some(Tok::Word(w)) if w == "false" => Ok(Value::Bool(false)),
            Some(Tok::LBracket) if allow_list => {
                let mut items = Vec::new();
                if self.peek() == Some(&Tok::RBracket) {
                    self.pos += 1;
                    return Ok(Value::List(items));
                }
                loop {
                    items.push(self.value(false)?);
                    if items.len() > MAX_LIST {
                        return Err(MinilangError::TooComplex("more than 1000 list items"));
                    }
                    match self.next() {
                        Some(Tok::Comma) => {}
                        Some(Tok::RBracket) => return Ok(Value::List(items)),
                        _ => return Err(syntax(self.at(), "expected ',' or ']'")),
                    }
                }
            }
            _ => Err(syntax(
                at,
                "expected a value (string, number, list, null, true or false)",
            )),
        }
    }
}

/// Parses a `filter` argument.
pub fn parse_filter(input: &str) -> Result<Expr, MinilangError> {
    if input.len() > MAX_LEN {
        return Err(MinilangError::TooComplex("longer than 4096 bytes"));
    }
    let toks = tokenize(input)?;
    let mut p = Parser {
        toks,
        pos: 0,
        end: input.len(),
        depth: 0,
    };
    let e = p.or_expr()?;
    if p.pos < p.toks.len() {
        return Err(syntax(p.at(), "unexpected text after the expression"));
    }
    Ok(e)
}

/// Parses an `order` argument into `(field, descending)` pairs.
pub fn parse_order(input: &str) -> Result<Vec<(String, bool)>, MinilangError> {
    if input.len() > MAX_LEN {
        return Err(MinilangError::TooComplex("longer than 4096 bytes"));
    }
    let mut out = Vec::new();
    let mut offset = 0;
    for part in input.split(',') {
        let trimmed = part.trim();
        let (desc, name) = match trimmed.as_bytes().first() {
            Some(b'-') => (true, trimmed[1..].trim()),
            Some(b'+') => (false, trimmed[1..].trim()),
            _ => (false, trimmed),
        };
        let valid = !name.is_empty()
            && name.as_bytes()[0].is_ascii_alphabetic()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(syntax(offset, format!("bad order item {trimmed:?}")));
        }
        out.push((name.to_owned(), desc));
        offset += part.len() + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(field: &str, op: Op, value: Value) -> Expr {
        Expr::Cmp {
            field: field.into(),
            op,
            value,
        }
    }

    #[test]
    fn the_reference_examples_parse() {
        assert_eq!(
            parse_filter(r#"name ilike "%foo%""#).unwrap(),
            cmp("name", Op::ILike, Value::Str("%foo%".into()))
        );
        assert_eq!(
            parse_filter(r#"status == "RUNNING" & !(cluster_size >= -2 | x in ["a", 1.5, null])"#)
                .unwrap(),
            Expr::And(
                Box::new(cmp("status", Op::Eq, Value::Str("RUNNING".into()))),
                Box::new(Expr::Not(Box::new(Expr::Or(
                    Box::new(cmp("cluster_size", Op::Ge, Value::Int(-2))),
                    Box::new(cmp(
                        "x",
                        Op::In,
                        Value::List(vec![Value::Str("a".into()), Value::Float(1.5), Value::Null])
                    )),
                ))))
            )
        );
        assert_eq!(
            parse_filter(r#"a isnot null"#).unwrap(),
            cmp("a", Op::IsNot, Value::Null)
        );
        assert_eq!(
            parse_filter(r#"a != "x\"y""#).unwrap(),
            cmp("a", Op::Ne, Value::Str("x\"y".into()))
        );
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let e = parse_filter("a == 1 | b == 2 & c == 3").unwrap();
        assert!(
            matches!(e, Expr::Or(_, ref r) if matches!(**r, Expr::And(_, _))),
            "{e:?}"
        );
    }

    #[test]
    fn malformed_filters_are_errors_not_panics() {
        for bad in [
            "",
            "a",
            "a ==",
            "== 1",
            "a == 1 &",
            "(a == 1",
            "a == 1)",
            "a == [1, [2]]",
            "a == \"open",
            "a === 1",
            "a == 1 b == 2",
            "a ~ 1",
            "a == 1e999",
            "a == --1",
            "ä == 1",
            "a in [1,",
            "!",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad:?}");
        }
        let deep = format!("{}a == 1{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(
            parse_filter(&deep).unwrap_err(),
            MinilangError::TooComplex("more than 32 levels of nesting")
        );
        assert!(matches!(
            parse_filter(&"a == 1 & ".repeat(1000)),
            Err(MinilangError::TooComplex(_))
        ));
    }

    #[test]
    fn order_lists() {
        assert_eq!(
            parse_order("-created_at, +name,email").unwrap(),
            vec![
                ("created_at".into(), true),
                ("name".into(), false),
                ("email".into(), false)
            ]
        );
        for bad in ["", "-", "a b", "name;drop", "1a", "a,,b"] {
            assert!(parse_order(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_input_parses_or_fails_cleanly(s in ".{0,200}") {
            let _ = parse_filter(&s);
            let _ = parse_order(&s);
        }
    }
}
