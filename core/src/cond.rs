//! The condition language: a small, CEL-like expression language.
//!
//! ```text
//! expr    := or
//! or      := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | cmp
//! cmp     := primary ( ("==" | "!=" | "<" | "<=" | ">" | ">=" | "in") primary )?
//! primary := number | string | true | false | null | now
//!          | timestamp("2026-01-01T00:00:00Z")
//!          | path | has(path) | "(" expr ")" | "[" [expr ("," expr)*] "]"
//! path    := ("principal" | "resource" | "context") ("." ident)+
//! ```
//!
//! Values are null, booleans, numbers, strings, timestamps and lists.
//! Comparing different types, reading a missing attribute outside `has()`,
//! or a non-boolean result is an evaluation error, and an error denies.
//! Parsing is bounded (4 KiB of source, nesting depth 32) and never panics.

use serde_json::Value as Json;
use std::fmt;

pub const MAX_SOURCE: usize = 4096;
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    /// Unix microseconds.
    Time(i64),
    List(Vec<Val>),
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Null => write!(f, "null"),
            Val::Bool(b) => write!(f, "{b}"),
            Val::Num(n) => write!(f, "{n}"),
            Val::Str(s) => write!(f, "{s:?}"),
            Val::Time(t) => write!(f, "timestamp({t}us)"),
            Val::List(l) => {
                write!(f, "[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

impl Op {
    /// Whether an ordering satisfies this comparison (not for `in`).
    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering;
        match self {
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
            Op::In => false,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(Val),
    Now,
    Path(Vec<String>),
    Has(Vec<String>),
    List(Vec<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(Op, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based character position.
    pub position: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at position {}: {}", self.position, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Sym(&'static str),
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let err = |p: usize, m: &str| ParseError {
        position: p + 1,
        message: m.to_string(),
    };
    if src.len() > MAX_SOURCE {
        return Err(err(MAX_SOURCE, "condition longer than 4096 bytes"));
    }
    let cs: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() || (c == '-' && cs.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            i += 1;
            while i < cs.len() && (cs[i].is_ascii_digit() || cs[i] == '.') {
                i += 1;
            }
            let s: String = cs[start..i].iter().collect();
            let n: f64 = s.parse().map_err(|_| err(start, "invalid number"))?;
            out.push((Tok::Num(n), start));
            continue;
        }
        if c == '"' || c == '\'' {
            i += 1;
            let mut s = String::new();
            loop {
                match cs.get(i) {
                    None => return Err(err(start, "unterminated string")),
                    Some('\\') => {
                        match cs.get(i + 1) {
                            Some(e @ ('"' | '\'' | '\\')) => s.push(*e),
                            Some('n') => s.push('\n'),
                            _ => return Err(err(i, "invalid escape")),
                        }
                        i += 2;
                    }
                    Some(q) if *q == c => {
                        i += 1;
                        break;
                    }
                    Some(o) => {
                        s.push(*o);
                        i += 1;
                    }
                }
            }
            out.push((Tok::Str(s), start));
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            out.push((Tok::Ident(cs[start..i].iter().collect()), start));
            continue;
        }
        let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
        let sym = match two.as_str() {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "&&" => Some("&&"),
            "||" => Some("||"),
            _ => None,
        };
        if let Some(s) = sym {
            out.push((Tok::Sym(s), start));
            i += 2;
            continue;
        }
        let one = match c {
            '<' => "<",
            '>' => ">",
            '!' => "!",
            '(' => "(",
            ')' => ")",
            '[' => "[",
            ']' => "]",
            ',' => ",",
            '.' => ".",
            _ => return Err(err(start, &format!("unexpected character {c:?}"))),
        };
        out.push((Tok::Sym(one), start));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn err<T>(&self, m: impl Into<String>) -> Result<T, ParseError> {
        let p = self.toks.get(self.pos).map(|t| t.1).unwrap_or(self.end);
        Err(ParseError {
            position: p + 1,
            message: m.into(),
        })
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn eat(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, s: &str) -> Result<(), ParseError> {
        if self.eat(s) {
            Ok(())
        } else {
            self.err(format!("expected {s:?}"))
        }
    }
    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("expression nested too deeply");
        }
        Ok(())
    }
    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let mut l = self.and()?;
        while self.eat("||") {
            let r = self.and()?;
            l = Expr::Or(Box::new(l), Box::new(r));
        }
        self.depth -= 1;
        Ok(l)
    }
    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.unary()?;
        while self.eat("&&") {
            let r = self.unary()?;
            l = Expr::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat("!") {
            self.enter()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.cmp()
    }
    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let l = self.primary()?;
        let op = match self.peek() {
            Some(Tok::Sym("==")) => Op::Eq,
            Some(Tok::Sym("!=")) => Op::Ne,
            Some(Tok::Sym("<")) => Op::Lt,
            Some(Tok::Sym("<=")) => Op::Le,
            Some(Tok::Sym(">")) => Op::Gt,
            Some(Tok::Sym(">=")) => Op::Ge,
            Some(Tok::Ident(i)) if i == "in" => Op::In,
            _ => return Ok(l),
        };
        self.pos += 1;
        let r = self.primary()?;
        Ok(Expr::Cmp(op, Box::new(l), Box::new(r)))
    }
    fn path(&mut self, root: String) -> Result<Vec<String>, ParseError> {
        if !matches!(root.as_str(), "principal" | "resource" | "context") {
            self.pos -= 1;
            return self.err(format!(
                "unknown name {root:?}; attributes start with principal., resource. or context."
            ));
        }
        let mut p = vec![root];
        if !matches!(self.peek(), Some(Tok::Sym("."))) {
            return self.err("expected \".\" and an attribute name");
        }
        while self.eat(".") {
            match self.peek().cloned() {
                Some(Tok::Ident(i)) => {
                    self.pos += 1;
                    p.push(i);
                }
                _ => return self.err("expected an attribute name"),
            }
        }
        Ok(p)
    }
    fn primary(&mut self) -> Result<Expr, ParseError> {
        let Some(t) = self.peek().cloned() else {
            return self.err("unexpected end of condition");
        };
        self.pos += 1;
        match t {
            Tok::Num(n) => Ok(Expr::Lit(Val::Num(n))),
            Tok::Str(s) => Ok(Expr::Lit(Val::Str(s))),
            Tok::Sym("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Sym("[") => {
                self.enter()?;
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.expr()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                self.depth -= 1;
                Ok(Expr::List(items))
            }
            Tok::Ident(i) => match i.as_str() {
                "true" => Ok(Expr::Lit(Val::Bool(true))),
                "false" => Ok(Expr::Lit(Val::Bool(false))),
                "null" => Ok(Expr::Lit(Val::Null)),
                "now" => Ok(Expr::Now),
                "has" => {
                    self.expect("(")?;
                    let root = match self.peek().cloned() {
                        Some(Tok::Ident(r)) => {
                            self.pos += 1;
                            r
                        }
                        _ => return self.err("has() takes an attribute path"),
                    };
                    let p = self.path(root)?;
                    self.expect(")")?;
                    Ok(Expr::Has(p))
                }
                "timestamp" => {
                    self.expect("(")?;
                    let s = match self.peek().cloned() {
                        Some(Tok::Str(s)) => {
                            self.pos += 1;
                            s
                        }
                        _ => return self.err("timestamp() takes an RFC 3339 string"),
                    };
                    let t = match parse_rfc3339(&s) {
                        Some(t) => t,
                        None => return self.err("invalid RFC 3339 timestamp"),
                    };
                    self.expect(")")?;
                    Ok(Expr::Lit(Val::Time(t)))
                }
                _ => Ok(Expr::Path(self.path(i.clone())?)),
            },
            Tok::Sym(s) => {
                self.pos -= 1;
                self.err(format!("unexpected {s:?}"))
            }
        }
    }
}

/// Parse `YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+HH:MM|-HH:MM)` to Unix µs.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_us = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = s.get(st..i)?;
        if digits.is_empty() {
            return None;
        }
        let mut f = digits.chars().take(6).collect::<String>();
        while f.len() < 6 {
            f.push('0');
        }
        frac_us = f.parse().ok()?;
    }
    let off = match s.get(i..)? {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(((days * 86400 + h * 3600 + mi * 60 + se - off) * 1_000_000) + frac_us)
}

/// Parse and statically check a condition. Errors carry the position.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let toks = lex(src)?;
    let mut p = Parser {
        end: src.chars().count(),
        toks,
        pos: 0,
        depth: 0,
    };
    if p.toks.is_empty() {
        return p.err("empty condition");
    }
    let e = p.expr()?;
    if p.pos < p.toks.len() {
        return p.err("unexpected text after the condition");
    }
    check(&e).map_err(|m| ParseError {
        position: 1,
        message: m,
    })?;
    Ok(e)
}

/// Static type check of what is known without data: a condition must be
/// boolean-shaped, and comparisons of two literals must be of one type.
fn check(e: &Expr) -> Result<(), String> {
    fn lit_type(e: &Expr) -> Option<&'static str> {
        match e {
            Expr::Lit(Val::Num(_)) => Some("number"),
            Expr::Lit(Val::Str(_)) => Some("string"),
            Expr::Lit(Val::Bool(_)) => Some("boolean"),
            Expr::Lit(Val::Time(_)) | Expr::Now => Some("timestamp"),
            Expr::List(_) => Some("list"),
            _ => None,
        }
    }
    match e {
        Expr::Lit(Val::Bool(_)) | Expr::Has(_) | Expr::Path(_) => Ok(()),
        Expr::Lit(v) => Err(format!("a condition must be boolean, not {v}")),
        Expr::Now | Expr::List(_) => Err("a condition must be boolean".into()),
        Expr::Not(x) => check(x),
        Expr::And(a, b) | Expr::Or(a, b) => check(a).and(check(b)),
        Expr::Cmp(op, a, b) => {
            if *op == Op::In {
                if let Some(t) = lit_type(b) {
                    if t != "list" && t != "string" {
                        return Err(format!("right side of \"in\" must be a list, not a {t}"));
                    }
                }
                return Ok(());
            }
            match (lit_type(a), lit_type(b)) {
                (Some(x), Some(y)) if x != y => Err(format!("cannot compare a {x} with a {y}")),
                (Some("list"), _) | (_, Some("list")) if !matches!(op, Op::Eq | Op::Ne) => {
                    Err("lists can only be compared with == and !=".into())
                }
                _ => Ok(()),
            }
        }
    }
}

/// The data a condition reads.
pub struct Env<'a> {
    pub principal: &'a Json,
    pub resource: &'a Json,
    /// Resource attributes as (name, text) pairs, as the row form of
    /// authorize() passes them: read before `resource` (the last pair of a
    /// name wins, as in a JSON object), borrowed, with no object built per
    /// row. A text that parses as a finite number is a number, NULL is null,
    /// anything else a string.
    pub resource_pairs: &'a [(&'a str, Option<&'a str>)],
    pub context: &'a Json,
    pub now_us: i64,
}

/// The number a text pair stands for, if any.
fn text_number(t: &str) -> Option<f64> {
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// A resource attribute given as a text pair: Some(value) when the pair
/// exists (value None = SQL NULL).
fn pair<'a>(env: &Env<'a>, path: &[String]) -> Option<Option<&'a str>> {
    if path.len() == 2 && path[0] == "resource" {
        env.resource_pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == path[1])
            .map(|(_, v)| *v)
    } else {
        None
    }
}

/// The value of a text pair (see [`Env::resource_pairs`]).
pub fn text_value(v: Option<&str>) -> Val {
    match v {
        None => Val::Null,
        Some(t) => match text_number(t) {
            Some(n) => Val::Num(n),
            None => Val::Str(t.to_string()),
        },
    }
}

fn lookup<'a>(env: &'a Env, path: &[String]) -> Option<&'a Json> {
    let mut cur = match path.first()?.as_str() {
        "principal" => env.principal,
        "resource" => env.resource,
        "context" => env.context,
        _ => return None,
    };
    for k in &path[1..] {
        cur = cur.as_object()?.get(k)?;
    }
    Some(cur)
}

fn from_json(j: &Json) -> Val {
    match j {
        Json::Null => Val::Null,
        Json::Bool(b) => Val::Bool(*b),
        Json::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
        // Strings that are RFC 3339 instants compare as timestamps against
        // timestamps (parsed in compare()), and as strings against strings.
        Json::String(s) => Val::Str(s.clone()),
        Json::Array(a) => Val::List(a.iter().map(from_json).collect()),
        Json::Object(_) => Val::Str(j.to_string()),
    }
}

/// A trace of the comparisons evaluated, for explain().
pub type Trace = Vec<(String, String)>;

fn eval(e: &Expr, env: &Env, trace: &mut Option<&mut Trace>) -> Result<Val, String> {
    Ok(match e {
        Expr::Lit(v) => v.clone(),
        Expr::Now => Val::Time(env.now_us),
        Expr::Path(p) => match pair(env, p) {
            Some(v) => text_value(v),
            None => match lookup(env, p) {
                Some(j) => from_json(j),
                None => return Err(format!("attribute {} is missing", p.join("."))),
            },
        },
        Expr::Has(p) => Val::Bool(match pair(env, p) {
            Some(v) => v.is_some(),
            None => lookup(env, p).is_some_and(|j| !j.is_null()),
        }),
        Expr::List(items) => Val::List(
            items
                .iter()
                .map(|i| eval(i, env, trace))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Not(x) => Val::Bool(!truthy(eval(x, env, trace)?)?),
        Expr::And(a, b) => {
            Val::Bool(truthy(eval(a, env, trace)?)? && truthy(eval(b, env, trace)?)?)
        }
        Expr::Or(a, b) => Val::Bool(truthy(eval(a, env, trace)?)? || truthy(eval(b, env, trace)?)?),
        Expr::Cmp(op, a, b) => {
            // Fast path, same result: two scalars of one kind compared in
            // place, without copying attribute strings.
            if trace.is_none() && *op != Op::In {
                if let Some(o) = scalar(a, env)
                    .zip(scalar(b, env))
                    .and_then(|(l, r)| l.order(&r))
                {
                    return Ok(Val::Bool(op.holds(o)));
                }
            }
            let (l, r) = (eval(a, env, trace)?, eval(b, env, trace)?);
            let res = compare(*op, &l, &r);
            if let Some(t) = trace.as_mut() {
                let shown = match &res {
                    Ok(v) => format!("{l} {} {r} => {v}", op.text()),
                    Err(m) => format!("{l} {} {r} => error: {m}", op.text()),
                };
                t.push((format!("{} {} {}", show(a), op.text(), show(b)), shown));
            }
            Val::Bool(res?)
        }
    })
}

/// A borrowed scalar operand (see the fast path in eval()).
enum Scalar<'a> {
    Str(&'a str),
    Num(f64),
    Bool(bool),
}

impl Scalar<'_> {
    /// The order of two scalars of the same kind; None for anything the
    /// general compare() must judge (mixed kinds, NaN).
    fn order(&self, r: &Scalar) -> Option<std::cmp::Ordering> {
        match (self, r) {
            (Scalar::Str(a), Scalar::Str(b)) => Some(a.cmp(b)),
            (Scalar::Num(a), Scalar::Num(b)) => a.partial_cmp(b),
            (Scalar::Bool(a), Scalar::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

fn scalar<'a>(e: &'a Expr, env: &'a Env) -> Option<Scalar<'a>> {
    match e {
        Expr::Lit(Val::Str(s)) => Some(Scalar::Str(s)),
        Expr::Lit(Val::Num(n)) => Some(Scalar::Num(*n)),
        Expr::Lit(Val::Bool(b)) => Some(Scalar::Bool(*b)),
        Expr::Path(p) => match pair(env, p) {
            Some(t) => {
                let t = t?;
                Some(match text_number(t) {
                    Some(n) => Scalar::Num(n),
                    None => Scalar::Str(t),
                })
            }
            None => match lookup(env, p)? {
                Json::String(s) => Some(Scalar::Str(s)),
                Json::Number(n) => n.as_f64().map(Scalar::Num),
                Json::Bool(b) => Some(Scalar::Bool(*b)),
                _ => None,
            },
        },
        _ => None,
    }
}

fn show(e: &Expr) -> String {
    match e {
        Expr::Lit(v) => v.to_string(),
        Expr::Now => "now".into(),
        Expr::Path(p) => p.join("."),
        Expr::Has(p) => format!("has({})", p.join(".")),
        Expr::List(_) => "[...]".into(),
        _ => "(...)".into(),
    }
}

fn truthy(v: Val) -> Result<bool, String> {
    match v {
        Val::Bool(b) => Ok(b),
        other => Err(format!("expected a boolean, got {other}")),
    }
}

fn as_time(v: &Val) -> Option<i64> {
    match v {
        Val::Time(t) => Some(*t),
        Val::Str(s) => parse_rfc3339(s),
        _ => None,
    }
}

fn compare(op: Op, l: &Val, r: &Val) -> Result<bool, String> {
    use std::cmp::Ordering;
    if op == Op::In {
        return match r {
            Val::List(items) => Ok(items.iter().any(|i| compare(Op::Eq, l, i).unwrap_or(false))),
            Val::Str(s) => match l {
                Val::Str(x) => Ok(s.contains(x.as_str())),
                _ => Err("\"in\" on a string needs a string".into()),
            },
            other => Err(format!("\"in\" needs a list, got {other}")),
        };
    }
    let ord: Option<Ordering> = match (l, r) {
        (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
        (Val::Null, Val::Null) => Some(Ordering::Equal),
        (Val::Time(_), _) | (_, Val::Time(_)) => match (as_time(l), as_time(r)) {
            (Some(a), Some(b)) => Some(a.cmp(&b)),
            _ => None,
        },
        (Val::List(a), Val::List(b)) if matches!(op, Op::Eq | Op::Ne) => Some(if a == b {
            Ordering::Equal
        } else {
            Ordering::Less
        }),
        (Val::Null, _) | (_, Val::Null) if matches!(op, Op::Eq | Op::Ne) => Some(Ordering::Less),
        _ => None,
    };
    let Some(o) = ord else {
        return Err(format!("cannot compare {l} with {r}"));
    };
    Ok(op.holds(o))
}

/// The value of an expression (the compiled policy form computes the parts
/// of a condition that do not read the row with this, once per statement).
pub fn value(e: &Expr, env: &Env) -> Result<Val, String> {
    eval(e, env, &mut None)
}

/// Evaluate; an error is reported (and denies).
pub fn evaluate(e: &Expr, env: &Env, trace: Option<&mut Trace>) -> Result<bool, String> {
    match trace {
        None => eval_bool(e, env),
        Some(t) => truthy(eval(e, env, &mut Some(t))?),
    }
}

/// `truthy(eval(e))` without a trace, for the boolean part of a condition
/// (the connectives and comparisons a decision is made of): the same
/// results and errors, without passing each intermediate value around.
fn eval_bool(e: &Expr, env: &Env) -> Result<bool, String> {
    match e {
        Expr::And(a, b) => Ok(eval_bool(a, env)? && eval_bool(b, env)?),
        Expr::Or(a, b) => Ok(eval_bool(a, env)? || eval_bool(b, env)?),
        Expr::Not(x) => Ok(!eval_bool(x, env)?),
        Expr::Lit(Val::Bool(b)) => Ok(*b),
        Expr::Cmp(op, a, b) if *op != Op::In => {
            if let Some(o) = scalar(a, env)
                .zip(scalar(b, env))
                .and_then(|(l, r)| l.order(&r))
            {
                return Ok(op.holds(o));
            }
            compare(*op, &eval(a, env, &mut None)?, &eval(b, env, &mut None)?)
        }
        _ => truthy(eval(e, env, &mut None)?),
    }
}

/// The same condition with everything fixed for a statement folded in:
/// each `principal.*` attribute that exists becomes its value, `has()` of a
/// principal attribute its answer, and `now` the statement's instant. Only
/// resource and context reads remain for each call. Evaluating the result
/// gives exactly what evaluating `e` gives (a missing principal attribute
/// is left as a path, so it still errors, and only where evaluation reaches
/// it); explain() keeps using `e`, whose trace names the attributes.
pub fn bind_principal(e: &Expr, principal: &Json, now_us: i64) -> Expr {
    let b = |x: &Expr| Box::new(bind_principal(x, principal, now_us));
    let is_principal = |p: &[String]| p.first().is_some_and(|h| h == "principal");
    // Only the principal is known for the whole statement.
    let env = Env {
        principal,
        resource: &Json::Null,
        resource_pairs: &[],
        context: &Json::Null,
        now_us,
    };
    match e {
        Expr::Now => Expr::Lit(Val::Time(now_us)),
        Expr::Path(p) if is_principal(p) => match lookup(&env, p) {
            Some(j) => Expr::Lit(from_json(j)),
            None => e.clone(),
        },
        Expr::Has(p) if is_principal(p) => {
            Expr::Lit(Val::Bool(lookup(&env, p).is_some_and(|j| !j.is_null())))
        }
        Expr::List(items) => Expr::List(
            items
                .iter()
                .map(|i| bind_principal(i, principal, now_us))
                .collect(),
        ),
        Expr::Not(x) => Expr::Not(b(x)),
        Expr::And(x, y) => Expr::And(b(x), b(y)),
        Expr::Or(x, y) => Expr::Or(b(x), b(y)),
        Expr::Cmp(op, x, y) => Expr::Cmp(*op, b(x), b(y)),
        Expr::Lit(_) | Expr::Path(_) | Expr::Has(_) => e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn run(src: &str, p: Json, r: Json) -> Result<bool, String> {
        let e = parse(src).map_err(|e| e.to_string())?;
        evaluate(
            &e,
            &Env {
                principal: &p,
                resource: &r,
                resource_pairs: &[],
                context: &json!({}),
                now_us: 1_800_000_000_000_000,
            },
            None,
        )
    }

    #[test]
    fn resource_pairs_read_like_an_object() {
        let e = parse(
            "resource.amount <= principal.limit && resource.dept == 'x' && !has(resource.gone)",
        )
        .unwrap();
        let p = json!({"limit": 10});
        let run_pairs = |pairs: &[(&str, Option<&str>)]| {
            let env = Env {
                principal: &p,
                resource: &Json::Null,
                resource_pairs: pairs,
                context: &Json::Null,
                now_us: 0,
            };
            evaluate(&e, &env, None)
        };
        assert_eq!(
            run_pairs(&[
                ("amount", Some("3.0")),
                ("dept", Some("y")),
                ("dept", Some("x"))
            ]),
            Ok(true),
            "the last pair of a name wins"
        );
        assert_eq!(
            run_pairs(&[("amount", Some("11")), ("dept", Some("x"))]),
            Ok(false)
        );
        assert!(
            run_pairs(&[("dept", Some("x"))]).is_err(),
            "a missing attribute is an error (deny)"
        );
    }

    #[test]
    fn reference_rules() {
        let p = json!({"id": "u1", "department": "finance", "approval_limit": 1000});
        assert_eq!(
            run(
                "principal.id != resource.submitted_by",
                p.clone(),
                json!({"submitted_by": "u2"})
            ),
            Ok(true)
        );
        assert_eq!(
            run(
                "principal.id != resource.submitted_by",
                p.clone(),
                json!({"submitted_by": "u1"})
            ),
            Ok(false)
        );
        assert_eq!(
            run(
                "resource.department == principal.department",
                p.clone(),
                json!({"department": "finance"})
            ),
            Ok(true)
        );
        assert_eq!(
            run(
                "resource.department == principal.department",
                p.clone(),
                json!({"department": "sales"})
            ),
            Ok(false)
        );
        assert_eq!(
            run(
                "resource.amount <= principal.approval_limit",
                p.clone(),
                json!({"amount": 1000})
            ),
            Ok(true)
        );
        assert_eq!(
            run(
                "resource.amount <= principal.approval_limit",
                p.clone(),
                json!({"amount": 1001})
            ),
            Ok(false)
        );
    }

    #[test]
    fn operators_lists_has_and_time() {
        let p = json!({"roles": ["a", "b"], "n": 3});
        assert_eq!(
            run(
                "'a' in principal.roles && !('c' in principal.roles)",
                p.clone(),
                json!({})
            ),
            Ok(true)
        );
        assert_eq!(
            run("principal.n in [1, 2, 3]", p.clone(), json!({})),
            Ok(true)
        );
        assert_eq!(
            run("has(resource.x) || principal.n > 2", p.clone(), json!({})),
            Ok(true)
        );
        assert_eq!(
            run("has(resource.x)", p.clone(), json!({"x": null})),
            Ok(false)
        );
        assert_eq!(
            run(
                "now < timestamp('2030-01-01T00:00:00Z')",
                p.clone(),
                json!({})
            ),
            Ok(true)
        );
        assert_eq!(
            run(
                "resource.due < now",
                p.clone(),
                json!({"due": "2020-05-01T10:00:00+02:00"})
            ),
            Ok(true)
        );
    }

    #[test]
    fn errors_deny() {
        assert!(run(
            "resource.amount <= principal.approval_limit",
            json!({}),
            json!({"amount": 1})
        )
        .is_err());
        assert!(run("resource.amount <= 'ten'", json!({}), json!({"amount": 1})).is_err());
        assert!(run("resource.flag", json!({}), json!({"flag": "yes"})).is_err());
    }

    #[test]
    fn parse_errors_have_positions() {
        let e = parse("principal.id == ").unwrap_err();
        assert_eq!(e.position, 17);
        let e = parse("principal.id = 'x'").unwrap_err();
        assert!(e.message.contains("unexpected"), "{e}");
        assert!(parse("user.id == 'x'")
            .unwrap_err()
            .message
            .contains("unknown name"));
        assert!(parse("1 == 'x'").is_err());
        assert!(parse("'just a string'").is_err());
        assert!(parse("principal.a in 5").is_err());
        assert!(parse("(".repeat(100).as_str())
            .unwrap_err()
            .message
            .contains("deeply"));
        assert!(parse(&"principal.a || ".repeat(400)).is_err());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2000-01-01T00:00:00.5Z"),
            Some(946_684_800_500_000)
        );
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1970-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    /// Condition sources over principal, resource and context attributes.
    fn cond_source() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("principal.a"),
            Just("principal.b"),
            Just("principal.gone"),
            Just("principal.o.k"),
            Just("resource.x"),
            Just("resource.y"),
            Just("context.c"),
            Just("now"),
            Just("1"),
            Just("2.5"),
            Just("'s'"),
            Just("true"),
            Just("null"),
            Just("timestamp('2020-01-01T00:00:00Z')"),
        ];
        let op = prop_oneof![
            Just("=="),
            Just("!="),
            Just("<"),
            Just("<="),
            Just(">"),
            Just(">=")
        ];
        let atom = prop_oneof![
            (leaf.clone(), op, leaf.clone()).prop_map(|(l, o, r)| format!("{l} {o} {r}")),
            (leaf.clone(), leaf.clone(), leaf.clone())
                .prop_map(|(l, a, b)| format!("{l} in [{a}, {b}]")),
            (leaf.clone(), leaf.clone()).prop_map(|(l, r)| format!("{l} in {r}")),
            prop_oneof![
                Just("principal.a"),
                Just("principal.gone"),
                Just("principal.o.k"),
                Just("resource.x")
            ]
            .prop_map(|p| format!("has({p})")),
            leaf.prop_map(str::to_string),
        ];
        atom.prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) && ({b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) || ({b})")),
                inner.prop_map(|a| format!("!({a})")),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]
        /// The in-place comparison fast path gives exactly what the general
        /// path (taken whenever a trace is recorded) gives.
        #[test]
        fn comparison_fast_path_agrees(
            l in prop_oneof![Just("resource.a"), Just("principal.x"), Just("'b'"), Just("2"), Just("true"), Just("resource.gone")],
            op in prop_oneof![Just("=="), Just("!="), Just("<"), Just("<="), Just(">"), Just(">=")],
            r in prop_oneof![Just("resource.a"), Just("principal.x"), Just("'b'"), Just("2"), Just("false"), Just("now")],
            a in prop_oneof![Just(json!("b")), Just(json!("a")), Just(json!(2)), Just(json!(2.5)), Just(json!(true)), Just(json!(null)), Just(json!([1]))],
            x in prop_oneof![Just(json!("b")), Just(json!(1)), Just(json!(false)), Just(json!(null)), Just(json!("2020-01-01T00:00:00Z"))],
        ) {
            // Literal pairs the type checker refuses at grant time are skipped.
            let parsed = parse(&format!("{l} {op} {r}"));
            prop_assume!(parsed.is_ok());
            let e = parsed.unwrap();
            let p = json!({"x": x});
            let r = json!({"a": a});
            let env = Env { principal: &p, resource: &r, resource_pairs: &[], context: &Json::Null, now_us: 5 };
            let mut t = Vec::new();
            prop_assert_eq!(evaluate(&e, &env, None), evaluate(&e, &env, Some(&mut t)));
            // The same attribute as a text pair (what authorize_attrs passes)
            // reads as its JSON form would, on both paths.
            let text: Option<String> = match &r["a"] { Json::Null => None, Json::String(s) => Some(s.clone()), Json::Number(n) => Some(n.to_string()), _ => return Ok(()) };
            let pairs = [("a", text.as_deref())];
            let env2 = Env { principal: &p, resource: &Json::Null, resource_pairs: &pairs, context: &Json::Null, now_us: 5 };
            let numeric_text = matches!(&r["a"], Json::String(s) if text_number(s).is_some());
            if !numeric_text {
                prop_assert_eq!(evaluate(&e, &env2, None), evaluate(&e, &env, None));
                prop_assert_eq!(evaluate(&e, &env2, None), evaluate(&e, &env2, Some(&mut Vec::new())));
            }
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn parser_never_panics_on_tokens(parts in proptest::collection::vec(prop_oneof![
            Just("principal.a"), Just("resource.b"), Just("=="), Just("<="), Just("&&"), Just("||"),
            Just("!"), Just("("), Just(")"), Just("["), Just("]"), Just(","), Just("in"), Just("1"),
            Just("'s'"), Just("has("), Just("now"), Just("timestamp('2020-01-01T00:00:00Z')")], 0..60)) {
            let src = parts.join(" ");
            if let Ok(e) = parse(&src) {
                let env = Env { principal: &json!({"a": 1}), resource: &json!({"b": "x"}), resource_pairs: &[], context: &json!({}), now_us: 0 };
                let _ = evaluate(&e, &env, None);
            }
        }

        /// Folding the statement's principal and instant into a condition
        /// never changes a decision, an error, or its message.
        #[test]
        fn binding_the_principal_changes_nothing(
            src in cond_source(),
            a in prop_oneof![Just(json!("s")), Just(json!(1)), Just(json!(2.5)), Just(json!(true)), Just(json!(null)),
                             Just(json!([1, "s"])), Just(json!("2020-01-01T00:00:00Z")), Just(json!({"k": 1}))],
            b in prop_oneof![Just(json!("S")), Just(json!(0)), Just(json!(false)), Just(json!(null))],
            k in prop_oneof![Just(json!(1)), Just(json!("s")), Just(json!(null))],
            x in prop_oneof![Just(json!("s")), Just(json!(1)), Just(json!(true)), Just(json!(null)), Just(json!([1]))],
            y in prop_oneof![Just(Some("1")), Just(Some("s")), Just(Some("2020-01-01T00:00:00Z")), Just(None)],
            c in prop_oneof![Just(json!({"c": 1})), Just(json!({})), Just(json!(null))],
            as_pairs in any::<bool>(),
        ) {
            let Ok(e) = parse(&src) else { return Ok(()) };
            let p = json!({"a": a, "b": b, "o": {"k": k}});
            let r = json!({"x": x, "y": y});
            let pairs = [("y", y)];
            let env = Env {
                principal: &p,
                resource: &r,
                resource_pairs: if as_pairs { &pairs } else { &[] },
                context: &c,
                now_us: 1_600_000_000_000_000,
            };
            let bound = bind_principal(&e, &p, env.now_us);
            prop_assert_eq!(evaluate(&bound, &env, None), evaluate(&e, &env, None), "{}", src);
            // The traced evaluation (explain) decides as the untraced one.
            prop_assert_eq!(evaluate(&e, &env, Some(&mut Vec::new())), evaluate(&e, &env, None), "{}", src);
        }
    }
}
