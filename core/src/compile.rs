//! The compiled policy form of authorize(): conditions translated to SQL so
//! that an RLS policy evaluates them natively, row by row, with no function
//! call per row.
//!
//! Only the row-dependent part of a condition is translated. Everything that
//! does not read a mapped `resource.*` column (principal and context
//! attributes, literals, `now`, whole sub-expressions) is a per-statement
//! constant: the generated SQL reads it through a scalar sub-select, which
//! the planner turns into an InitPlan evaluated once per statement, and the
//! value is computed by the interpreter itself ([`slots`]), so it means
//! exactly what it means to authorize().
//!
//! Which rules apply is also decided per statement, from the live policy
//! tables (roles, assignments, time windows, revocations): the SQL only
//! carries the conditions' text. A rule whose condition the SQL does not
//! carry (granted after the policy was generated, or not translatable), and
//! any constant whose type differs from its column's, switch that statement
//! to the interpreter (`fallback`), so the answer is always authorize()'s.
//!
//! Three-valued encoding: SQL NULL stands for an evaluation error. `a && b`
//! and `a || b` evaluate left to right with short circuit, as the interpreter
//! does, and a condition counts only when it `IS TRUE`.
//!
//! Numbers: integer columns are compared as float8, exactly as the
//! interpreter compares (binary64). `numeric` columns are compared in
//! decimal; the two agree for every value of at most 15 significant digits
//! (and numeric NaN/Infinity, which JSON cannot carry, are not supported).

use crate::authz::{Effect, Perm};
use crate::cond::{self, Env, Expr, Op, Val};
use std::fmt::Write;

/// SQL type family of a mapped column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColKind {
    /// text, varchar (compared byte-wise: COLLATE "C").
    Text,
    /// smallint, integer, bigint (compared as float8).
    Int,
    /// numeric (compared in decimal).
    Numeric,
    Bool,
}

impl ColKind {
    /// From `format_type()`; None for types the compiled form cannot carry.
    pub fn from_pg(ty: &str) -> Option<ColKind> {
        let base = ty.split('(').next().unwrap_or(ty).trim();
        Some(match base {
            "text" | "character varying" => ColKind::Text,
            "smallint" | "integer" | "bigint" => ColKind::Int,
            "numeric" => ColKind::Numeric,
            "boolean" => ColKind::Bool,
            _ => return None,
        })
    }

    fn matches(self, v: &Val) -> bool {
        matches!(
            (self, v),
            (ColKind::Text, Val::Str(_))
                | (ColKind::Int | ColKind::Numeric, Val::Num(_))
                | (ColKind::Bool, Val::Bool(_))
        )
    }

    /// The cast applied to a constant slot (inside the sub-select).
    fn slot_cast(self) -> &'static str {
        match self {
            ColKind::Text => "pg_catalog.text",
            ColKind::Int => "pg_catalog.float8",
            ColKind::Numeric => "pg_catalog.numeric",
            ColKind::Bool => "pg_catalog.bool",
        }
    }
}

/// A mapped column: `resource.<attr>` reads `<sql>`.
#[derive(Debug, Clone)]
pub struct Column {
    pub attr: String,
    /// The column, already quoted.
    pub sql: String,
    pub kind: ColKind,
    pub not_null: bool,
}

impl Column {
    /// The column as compared (typed, byte-wise for text).
    fn operand(&self) -> String {
        match self.kind {
            ColKind::Text => format!("({}::pg_catalog.text COLLATE \"C\")", self.sql),
            ColKind::Int => format!("{}::pg_catalog.float8", self.sql),
            ColKind::Numeric | ColKind::Bool => self.sql.clone(),
        }
    }
}

/// A per-statement constant of one condition.
#[derive(Debug, Clone)]
pub enum Const {
    /// The operand of a comparison with a column of this kind: its value
    /// must be of that kind, otherwise the statement falls back.
    Operand(Expr, ColKind),
    /// A boolean sub-expression: true, false or NULL (error).
    Boolean(Expr),
}

/// One condition, translated (or not).
#[derive(Debug, Clone)]
pub struct Compiled {
    pub text: String,
    /// The SQL with `{slot N}` placeholders resolved, or None when the
    /// condition reads a column in a way the SQL cannot express.
    pub sql: Option<String>,
    pub consts: Vec<Const>,
    /// Whether the SQL can be NULL (an error).
    pub nullable: bool,
}

/// Slot numbers (the third argument of `tenantguard.authz_slot`).
pub const SLOT_FALLBACK: usize = 0;
pub const SLOT_PERMIT_ALL: usize = 1;
pub const SLOT_FORBID_ALL: usize = 2;
fn slot_permit(j: usize) -> usize {
    3 + 2 * j
}
fn slot_forbid(j: usize) -> usize {
    4 + 2 * j
}

/// The whole compiled form for one action over one table.
#[derive(Debug, Clone)]
pub struct Plan {
    pub action: String,
    pub columns: Vec<Column>,
    pub conds: Vec<Compiled>,
}

/// The spec string carried in the SQL: the action's conditions and the
/// column kinds, enough for [`Plan::from_spec`] to rebuild the plan at run
/// time. Deterministic, so the same inputs give the same policy text.
pub fn spec_string(action: &str, columns: &[Column], conds: &[String]) -> String {
    let cols: Vec<serde_json::Value> = columns
        .iter()
        .map(|c| {
            serde_json::json!([
                c.attr,
                match c.kind {
                    ColKind::Text => "text",
                    ColKind::Int => "int",
                    ColKind::Numeric => "numeric",
                    ColKind::Bool => "bool",
                },
                c.not_null
            ])
        })
        .collect();
    serde_json::json!({"v": 1, "action": action, "columns": cols, "conditions": conds}).to_string()
}

/// The id a policy uses for its spec: hex SHA-256 of the text.
pub fn spec_id(spec: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(spec.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Plan {
    /// Build the plan from the distinct condition texts of the action.
    pub fn new(action: &str, columns: Vec<Column>, mut conds: Vec<String>) -> Plan {
        conds.sort();
        conds.dedup();
        let mut next = 3 + 2 * conds.len();
        let compiled = conds
            .into_iter()
            .map(|text| {
                let mut c = compile_condition(&text, &columns, next);
                if c.sql.is_none() {
                    c.consts.clear();
                }
                next += c.consts.len();
                c
            })
            .collect();
        Plan {
            action: action.to_string(),
            columns,
            conds: compiled,
        }
    }

    /// Rebuild from the spec string (column SQL is not needed at run time).
    pub fn from_spec(action: &str, spec: &str) -> Result<Plan, String> {
        let v: serde_json::Value =
            serde_json::from_str(spec).map_err(|e| format!("bad spec: {e}"))?;
        if v.get("v").and_then(|x| x.as_i64()) != Some(1) {
            return Err("unknown spec version".into());
        }
        if v.get("action").and_then(|x| x.as_str()) != Some(action) {
            return Err("the spec is for another action".into());
        }
        let mut columns = Vec::new();
        for c in v["columns"].as_array().ok_or("spec lacks columns")? {
            let attr = c[0].as_str().ok_or("bad column")?.to_string();
            let kind = match c[1].as_str() {
                Some("text") => ColKind::Text,
                Some("int") => ColKind::Int,
                Some("numeric") => ColKind::Numeric,
                Some("bool") => ColKind::Bool,
                _ => return Err("bad column kind".into()),
            };
            columns.push(Column {
                sql: String::new(),
                attr,
                kind,
                not_null: c[2].as_bool().unwrap_or(false),
            });
        }
        let conds = v["conditions"]
            .as_array()
            .ok_or("spec lacks conditions")?
            .iter()
            .map(|c| c.as_str().map(str::to_string).ok_or("bad condition"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan::new(action, columns, conds))
    }

    /// The policy expression. `slot(n, cast)` renders the sub-select that
    /// reads slot `n`; `fallback` is the interpreter call on the row.
    pub fn expression(&self, slot: &dyn Fn(usize, &str) -> String, fallback: &str) -> String {
        let b = "pg_catalog.bool";
        let mut permit = vec![slot(SLOT_PERMIT_ALL, b)];
        let mut forbid = vec![slot(SLOT_FORBID_ALL, b)];
        for (j, c) in self.conds.iter().enumerate() {
            let Some(sql) = &c.sql else { continue };
            let body = resolve(sql, slot);
            let test = if c.nullable {
                format!("({body}) IS TRUE")
            } else {
                format!("({body})")
            };
            permit.push(format!("({} AND {test})", slot(slot_permit(j), b)));
            forbid.push(format!("({} AND {test})", slot(slot_forbid(j), b)));
        }
        format!(
            "CASE WHEN {} THEN {fallback} ELSE (NOT ({}) AND ({})) END",
            slot(SLOT_FALLBACK, b),
            forbid.join(" OR "),
            permit.join(" OR ")
        )
    }

    /// Per-statement slot values, from the permissions that apply to the
    /// principal for this action and the interpreter's values of the
    /// constants. `None` is SQL NULL.
    pub fn slots(&self, applicable: &[(String, Perm)], env: &Env) -> Vec<Option<String>> {
        let n = 3 + 2 * self.conds.len() + self.conds.iter().map(|c| c.consts.len()).sum::<usize>();
        let mut out: Vec<Option<String>> = vec![Some("false".into()); n];
        let mut fallback = false;
        let mut active = vec![false; self.conds.len()];
        for (_, p) in applicable {
            let slot = match &p.condition {
                None => match p.effect {
                    Effect::Permit => SLOT_PERMIT_ALL,
                    Effect::Forbid => SLOT_FORBID_ALL,
                },
                Some((text, _)) => match self.conds.iter().position(|c| &c.text == text) {
                    Some(j) if self.conds[j].sql.is_some() => {
                        active[j] = true;
                        match p.effect {
                            Effect::Permit => slot_permit(j),
                            Effect::Forbid => slot_forbid(j),
                        }
                    }
                    _ => {
                        fallback = true;
                        continue;
                    }
                },
            };
            out[slot] = Some("true".into());
        }
        let mut k = 3 + 2 * self.conds.len();
        for (j, c) in self.conds.iter().enumerate() {
            for cst in &c.consts {
                if active[j] {
                    out[k] = match cst {
                        Const::Boolean(e) => {
                            cond::evaluate(e, env, None).ok().map(|b| b.to_string())
                        }
                        Const::Operand(e, kind) => match cond::value(e, env) {
                            Ok(v) if kind.matches(&v) => Some(val_text(&v)),
                            // Null, another type, a time, an error: the
                            // per-row result is not `column op constant`.
                            _ => {
                                fallback = true;
                                None
                            }
                        },
                    };
                } else {
                    out[k] = None;
                }
                k += 1;
            }
        }
        out[SLOT_FALLBACK] = Some(fallback.to_string());
        out
    }
}

fn val_text(v: &Val) -> String {
    match v {
        Val::Str(s) => s.clone(),
        Val::Num(n) => format!("{n}"),
        Val::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// `{slot N:cast}` placeholders are written while compiling, before the
/// slot renderer is known.
fn resolve(sql: &str, slot: &dyn Fn(usize, &str) -> String) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(i) = rest.find("{slot ") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').map(|e| i + e).unwrap_or(rest.len() - 1);
        let inner = &rest[i + 6..end];
        let (n, cast) = inner.split_once(':').unwrap_or((inner, "pg_catalog.bool"));
        out.push_str(&slot(n.parse().unwrap_or(usize::MAX), cast));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

struct Ctx<'a> {
    columns: &'a [Column],
    consts: Vec<Const>,
    base: usize,
}

impl Ctx<'_> {
    fn column(&self, e: &Expr) -> Option<&Column> {
        match e {
            Expr::Path(p) if p.len() == 2 && p[0] == "resource" => {
                self.columns.iter().find(|c| c.attr == p[1])
            }
            _ => None,
        }
    }

    /// Does the expression read a mapped column anywhere?
    fn reads_row(&self, e: &Expr) -> bool {
        match e {
            Expr::Path(p) | Expr::Has(p) => {
                p.len() >= 2 && p[0] == "resource" && self.columns.iter().any(|c| c.attr == p[1])
            }
            Expr::Lit(_) | Expr::Now => false,
            Expr::List(items) => items.iter().any(|i| self.reads_row(i)),
            Expr::Not(x) => self.reads_row(x),
            Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
                self.reads_row(a) || self.reads_row(b)
            }
        }
    }

    fn push(&mut self, c: Const, cast: &str) -> String {
        self.consts.push(c);
        format!("{{slot {}:{cast}}}", self.base + self.consts.len() - 1)
    }

    /// SQL for a boolean position, and whether it can be NULL.
    fn boolean(&mut self, e: &Expr) -> Option<(String, bool)> {
        if !self.reads_row(e) {
            let s = self.push(Const::Boolean(e.clone()), "pg_catalog.bool");
            return Some((s, true));
        }
        Some(match e {
            Expr::Path(_) => {
                let c = self.column(e)?;
                if c.kind == ColKind::Bool {
                    (c.sql.clone(), !c.not_null)
                } else {
                    // A non-boolean value in a boolean position: an error.
                    ("NULL::pg_catalog.bool".into(), true)
                }
            }
            Expr::Has(p) => {
                if p.len() != 2 {
                    return None;
                }
                let c = self.column(&Expr::Path(p.clone()))?;
                (format!("({} IS NOT NULL)", c.sql), false)
            }
            Expr::Not(x) => {
                let (s, n) = self.boolean(x)?;
                (format!("(NOT {s})"), n)
            }
            Expr::And(a, b) | Expr::Or(a, b) => {
                let is_and = matches!(e, Expr::And(..));
                let (sa, na) = self.boolean(a)?;
                let (sb, nb) = self.boolean(b)?;
                if !na {
                    // A cannot be an error: SQL's AND/OR short-circuit the
                    // same way the interpreter does.
                    (
                        format!("({sa} {} {sb})", if is_and { "AND" } else { "OR" }),
                        nb,
                    )
                } else if is_and {
                    (
                        format!("(CASE WHEN {sa} THEN {sb} WHEN NOT {sa} THEN false END)"),
                        true,
                    )
                } else {
                    (
                        format!("(CASE WHEN {sa} THEN true WHEN NOT {sa} THEN {sb} END)"),
                        true,
                    )
                }
            }
            Expr::Cmp(op, a, b) => {
                let (col, other, op) = match (self.column(a), self.column(b)) {
                    (Some(c), None) => (c.clone(), b, *op),
                    (None, Some(c)) => (c.clone(), a, flip(*op)?),
                    _ => return None,
                };
                if op == Op::In
                    || self.reads_row(other)
                    || matches!(**other, Expr::Now | Expr::Lit(Val::Time(_)))
                {
                    return None;
                }
                if let Expr::Lit(Val::Null) = **other {
                    // `== null` / `!= null`: exactly IS [NOT] NULL.
                    return match op {
                        Op::Eq => Some((format!("({} IS NULL)", col.sql), false)),
                        Op::Ne => Some((format!("({} IS NOT NULL)", col.sql), false)),
                        _ => None,
                    };
                }
                let k = self.push(
                    Const::Operand((**other).clone(), col.kind),
                    col.kind.slot_cast(),
                );
                let lhs = col.operand();
                match op {
                    Op::Eq | Op::Ne if !col.not_null => {
                        // A NULL column is JSON null: == is false, != true.
                        let d = if op == Op::Eq {
                            "IS NOT DISTINCT FROM"
                        } else {
                            "IS DISTINCT FROM"
                        };
                        (format!("({lhs} {d} {k})"), false)
                    }
                    _ => {
                        let o = match op {
                            Op::Eq => "=",
                            Op::Ne => "<>",
                            Op::Lt => "<",
                            Op::Le => "<=",
                            Op::Gt => ">",
                            Op::Ge => ">=",
                            Op::In => return None,
                        };
                        // NULL column with an ordering: an error (NULL).
                        (format!("({lhs} {o} {k})"), !col.not_null)
                    }
                }
            }
            Expr::Lit(_) | Expr::Now | Expr::List(_) => return None,
        })
    }
}

/// `k op col` as `col op' k`.
fn flip(op: Op) -> Option<Op> {
    Some(match op {
        Op::Eq => Op::Eq,
        Op::Ne => Op::Ne,
        Op::Lt => Op::Gt,
        Op::Le => Op::Ge,
        Op::Gt => Op::Lt,
        Op::Ge => Op::Le,
        Op::In => return None,
    })
}

fn compile_condition(text: &str, columns: &[Column], base: usize) -> Compiled {
    let mut ctx = Ctx {
        columns,
        consts: Vec::new(),
        base,
    };
    let out = cond::parse(text).ok().and_then(|e| ctx.boolean(&e));
    match out {
        Some((sql, nullable)) => Compiled {
            text: text.to_string(),
            sql: Some(sql),
            consts: ctx.consts,
            nullable,
        },
        None => Compiled {
            text: text.to_string(),
            sql: None,
            consts: Vec::new(),
            nullable: true,
        },
    }
}

/// Human-readable summary for the dry run: which conditions compile.
pub fn summary(plan: &Plan) -> String {
    let mut s = String::new();
    for c in &plan.conds {
        let _ = writeln!(
            s,
            "-- {}: {}",
            if c.sql.is_some() {
                "compiled"
            } else {
                "interpreted (falls back)"
            },
            c.text.replace('\n', " ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{applicable, decide_among, Policy};
    use proptest::prelude::*;
    use serde_json::{json, Value as Json};

    fn cols() -> Vec<Column> {
        vec![
            Column {
                attr: "submitted_by".into(),
                sql: "submitted_by".into(),
                kind: ColKind::Text,
                not_null: false,
            },
            Column {
                attr: "department".into(),
                sql: "department".into(),
                kind: ColKind::Text,
                not_null: true,
            },
            Column {
                attr: "amount".into(),
                sql: "amount".into(),
                kind: ColKind::Numeric,
                not_null: false,
            },
            Column {
                attr: "n".into(),
                sql: "n".into(),
                kind: ColKind::Int,
                not_null: false,
            },
            Column {
                attr: "flag".into(),
                sql: "flag".into(),
                kind: ColKind::Bool,
                not_null: false,
            },
        ]
    }

    fn slot(n: usize, cast: &str) -> String {
        format!("$s{n}::{cast}")
    }

    #[test]
    fn reference_rules_compile_without_calls_per_row() {
        let rule = "principal.id != resource.submitted_by && resource.department == principal.department && resource.amount <= principal.approval_limit";
        let p = Plan::new("document:approve", cols(), vec![rule.into()]);
        let c = &p.conds[0];
        assert_eq!(c.consts.len(), 3);
        assert_eq!(
            c.sql.as_deref().map(|s| resolve(s, &slot)).unwrap(),
            "((((submitted_by::pg_catalog.text COLLATE \"C\") IS DISTINCT FROM $s5::pg_catalog.text) AND ((department::pg_catalog.text COLLATE \"C\") = $s6::pg_catalog.text)) AND (amount <= $s7::pg_catalog.numeric))"
        );
        let e = p.expression(&slot, "FALLBACK");
        assert!(
            e.starts_with("CASE WHEN $s0::pg_catalog.bool THEN FALLBACK ELSE"),
            "{e}"
        );
        assert!(e.contains("IS TRUE"), "amount may be NULL: {e}");
    }

    #[test]
    fn untranslatable_conditions_fall_back() {
        for c in [
            "resource.submitted_by in ['a', 'b']",
            "resource.amount < resource.n",
            "resource.submitted_by < now",
            "resource.other.x == 1 && resource.amount < 1 && [resource.n] == [1]",
        ] {
            let p = Plan::new("a:b", cols(), vec![c.into()]);
            assert!(p.conds[0].sql.is_none(), "{c}");
        }
        // Unmapped resource attributes are per-statement constants (missing:
        // an error), not a reason to fall back.
        let p = Plan::new(
            "a:b",
            cols(),
            vec!["resource.other == 1 || resource.n > 2".into()],
        );
        assert!(p.conds[0].sql.is_some());
    }

    /// The reference semantics: the interpreter on the row as a JSON object.
    fn interpret(perms: &[(String, Perm)], principal: &Json, row: &Json) -> bool {
        let env = Env {
            principal,
            resource: row,
            resource_pairs: &[],
            context: &Json::Null,
            now_us: 1_800_000_000_000_000,
        };
        decide_among(perms, &[], &env, false).allowed
    }

    /// The compiled form, evaluated here by a tiny SQL-semantics evaluator
    /// over the same row (three-valued logic, IS DISTINCT FROM, CASE).
    fn compiled(plan: &Plan, perms: &[(String, Perm)], principal: &Json, row: &Json) -> bool {
        let env = Env {
            principal,
            resource: &Json::Null,
            resource_pairs: &[],
            context: &Json::Null,
            now_us: 1_800_000_000_000_000,
        };
        let slots = plan.slots(perms, &env);
        if slots[SLOT_FALLBACK].as_deref() == Some("true") {
            return interpret(perms, principal, row);
        }
        let sqlrow = |attr: &str| row.get(attr).cloned().unwrap_or(Json::Null);
        let t = |n: usize| slots[n].as_deref() == Some("true");
        let mut permit = t(SLOT_PERMIT_ALL);
        let mut forbid = t(SLOT_FORBID_ALL);
        for (j, c) in plan.conds.iter().enumerate() {
            if c.sql.is_none() {
                continue;
            }
            let e = cond::parse(&c.text).unwrap();
            let mut k = 3
                + 2 * plan.conds.len()
                + plan.conds[..j]
                    .iter()
                    .map(|c| c.consts.len())
                    .sum::<usize>();
            let v = sql_eval(&e, plan, &slots, &mut k, &sqlrow) == Some(true);
            permit |= t(slot_permit(j)) && v;
            forbid |= t(slot_forbid(j)) && v;
        }
        permit && !forbid
    }

    /// Mirrors Ctx::boolean's translation, evaluated with SQL semantics.
    fn sql_eval(
        e: &Expr,
        plan: &Plan,
        slots: &[Option<String>],
        k: &mut usize,
        row: &dyn Fn(&str) -> Json,
    ) -> Option<bool> {
        let ctx = Ctx {
            columns: &plan.columns,
            consts: vec![],
            base: 0,
        };
        if !ctx.reads_row(e) {
            let v = slots[*k].as_deref().map(|s| s == "true");
            *k += 1;
            return v;
        }
        match e {
            Expr::Path(_) => match row(&ctx.column(e).unwrap().attr) {
                Json::Bool(b) if ctx.column(e).unwrap().kind == ColKind::Bool => Some(b),
                _ => None,
            },
            Expr::Has(p) => Some(!row(&p[1]).is_null()),
            Expr::Not(x) => sql_eval(x, plan, slots, k, row).map(|b| !b),
            Expr::And(a, b) => {
                let va = sql_eval(a, plan, slots, k, row);
                let vb = sql_eval(b, plan, slots, k, row);
                match va {
                    Some(true) => vb,
                    Some(false) => Some(false),
                    None => None,
                }
            }
            Expr::Or(a, b) => {
                let va = sql_eval(a, plan, slots, k, row);
                let vb = sql_eval(b, plan, slots, k, row);
                match va {
                    Some(true) => Some(true),
                    Some(false) => vb,
                    None => None,
                }
            }
            Expr::Cmp(op, a, b) => {
                let (col, op) = match ctx.column(a) {
                    Some(c) => (c.clone(), *op),
                    None => (ctx.column(b).unwrap().clone(), flip(*op).unwrap()),
                };
                let other = if ctx.column(a).is_some() { b } else { a };
                if let Expr::Lit(Val::Null) = **other {
                    return Some((op == Op::Eq) == row(&col.attr).is_null());
                }
                let kv = slots[*k].clone();
                *k += 1;
                let rv = row(&col.attr);
                let kv = kv?;
                if rv.is_null() {
                    return match op {
                        Op::Eq => Some(false),
                        Op::Ne => Some(true),
                        _ => None,
                    };
                }
                let ord = match col.kind {
                    ColKind::Text => Some(rv.as_str().unwrap().as_bytes().cmp(kv.as_bytes())),
                    ColKind::Int | ColKind::Numeric => rv
                        .as_f64()
                        .unwrap()
                        .partial_cmp(&kv.parse::<f64>().unwrap()),
                    ColKind::Bool => Some(rv.as_bool().unwrap().cmp(&(kv == "true"))),
                }?;
                Some(match op {
                    Op::Eq => ord.is_eq(),
                    Op::Ne => ord.is_ne(),
                    Op::Lt => ord.is_lt(),
                    Op::Le => ord.is_le(),
                    Op::Gt => ord.is_gt(),
                    Op::Ge => ord.is_ge(),
                    Op::In => unreachable!(),
                })
            }
            _ => unreachable!(),
        }
    }

    fn perm(id: i64, c: Option<&str>, effect: Effect) -> Perm {
        Perm {
            id,
            role: "r".into(),
            action: "a:b".into(),
            condition: c.map(|s| (s.to_string(), cond::parse(s).unwrap())),
            effect,
        }
    }

    const CONDS: &[&str] = &[
        "principal.id != resource.submitted_by && resource.department == principal.department && resource.amount <= principal.approval_limit",
        "resource.amount > 10 || principal.level >= 3",
        "!(resource.n < principal.level) && has(resource.submitted_by)",
        "resource.flag || resource.n == 2",
        "principal.level > 1 && resource.amount >= 0 && !resource.flag",
        "resource.department != 'sales' || resource.submitted_by == principal.id",
        "resource.missing == 1 || resource.n > 0",
        "2 <= resource.n && resource.submitted_by != principal.id",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Differential: the compiled form decides exactly as the interpreter,
        /// for rows with NULLs and principals whose attributes are missing,
        /// null or of the wrong type (those statements fall back).
        #[test]
        fn compiled_agrees_with_interpreter(
            picks in proptest::collection::vec((0..CONDS.len(), prop_oneof![Just(Effect::Permit), Just(Effect::Forbid)]), 0..4),
            uncond in prop_oneof![Just(None), Just(Some(Effect::Permit)), Just(Some(Effect::Forbid))],
            sub in prop_oneof![Just(json!("u1")), Just(json!("u2")), Just(json!(null))],
            dept in prop_oneof![Just(json!("finance")), Just(json!("sales")), Just(json!(7))],
            limit in prop_oneof![Just(json!(1000)), Just(json!(999.5)), Just(json!("1000")), Just(json!(null))],
            level in prop_oneof![Just(json!(0)), Just(json!(2)), Just(json!(3)), Just(json!(true))],
            drop_limit in any::<bool>(),
            r_sub in prop_oneof![Just(json!("u1")), Just(json!("u2")), Just(json!("U1")), Just(json!(null))],
            r_dept in prop_oneof![Just(json!("finance")), Just(json!("sales"))],
            r_amount in prop_oneof![Just(json!(1000)), Just(json!(1001)), Just(json!(999.5)), Just(json!(0)), Just(json!(-3)), Just(json!(null))],
            r_n in prop_oneof![Just(json!(1)), Just(json!(2)), Just(json!(5)), Just(json!(null))],
            r_flag in prop_oneof![Just(json!(true)), Just(json!(false)), Just(json!(null))],
            unknown_cond in any::<bool>(),
        ) {
            let mut perms: Vec<(String, Perm)> = picks.iter().enumerate()
                .map(|(i, (c, e))| ("r".to_string(), perm(i as i64, Some(CONDS[*c]), *e))).collect();
            if let Some(e) = uncond { perms.push(("r".into(), perm(90, None, e))); }
            if unknown_cond { perms.push(("r".into(), perm(91, Some("resource.n == 5"), Effect::Permit))); }
            let mut principal = json!({"id": sub, "department": dept, "approval_limit": limit, "level": level});
            if drop_limit { principal.as_object_mut().unwrap().remove("approval_limit"); }
            let row = json!({"submitted_by": r_sub, "department": r_dept, "amount": r_amount, "n": r_n, "flag": r_flag});
            let plan = Plan::new("a:b", cols(), CONDS.iter().map(|s| s.to_string()).collect());
            prop_assert_eq!(compiled(&plan, &perms, &principal, &row), interpret(&perms, &principal, &row));
        }
    }

    #[test]
    fn spec_round_trip() {
        let conds = vec!["resource.n > 1".to_string()];
        let s = spec_string("a:b", &cols(), &conds);
        let p = Plan::from_spec("a:b", &s).unwrap();
        assert!(Plan::from_spec("a:c", &s).is_err());
        assert_eq!(p.columns.len(), 5);
        assert_eq!(p.conds[0].consts.len(), 1);
        assert!(Plan::from_spec("a:b", "{}").is_err());
        let _ = applicable(&Policy::default(), &[], "a:b");
    }
}
