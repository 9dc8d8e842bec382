//! Payload filters: which events of its types a subscription takes, decided in the publish
//! transaction (an event a filter refuses gets no delivery at all).
//!
//! A filter is a JSON object over the document `{"event_type": …, "payload": …}`, in the style
//! of MongoDB queries: each key is a dotted path (`payload.order.total`) or a combinator
//! (`$and`, `$or`: lists of filters; `$not`: a filter); all keys must hold. A path's value is
//! either a literal (equal, as JSON: `1` equals `1.0`) or an object of operators (`$eq`, `$ne`,
//! `$in`, `$nin`, `$gt`, `$gte`, `$lt`, `$lte`, `$exists`). Ordering operators compare numbers
//! with numbers and strings with strings; across types they do not hold. A missing path equals
//! nothing and `$exists: false` holds for it.
//!
//! Bounded: at most [`MAX_BYTES`] of JSON, [`MAX_NODES`] conditions, [`MAX_DEPTH`] levels of
//! nesting, [`MAX_LIST`] values per `$in`/`$nin`, [`MAX_SEGMENTS`] segments per path.

use std::cmp::Ordering;

use serde_json::Value;

/// Most bytes of a filter's JSON text.
pub const MAX_BYTES: usize = 4096;
/// Most conditions (paths and combinators) in one filter.
pub const MAX_NODES: usize = 64;
/// Deepest nesting of `$and`/`$or`/`$not`.
pub const MAX_DEPTH: usize = 8;
/// Most values in one `$in` or `$nin`.
pub const MAX_LIST: usize = 256;
/// Most segments of one dotted path.
pub const MAX_SEGMENTS: usize = 16;

/// A validated filter, ready to evaluate, with the document it was given.
#[derive(Debug, Clone)]
pub struct Filter {
    source: Value,
    root: Node,
}

/// Filters are the same when their documents are (JSON has no NaN, so equality is total).
impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Filter {}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Path(Vec<String>, Vec<Test>),
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Cmp(Ordering, bool, Value),
    Exists(bool),
}

/// Why a filter was refused: where (`payload.total.$gt`) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FilterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

fn refuse(path: &str, message: impl Into<String>) -> FilterError {
    FilterError {
        path: path.to_owned(),
        message: message.into(),
    }
}

struct Parser {
    nodes: usize,
}

impl Filter {
    /// Validates `value` as a filter.
    pub fn parse(value: &Value) -> Result<Self, FilterError> {
        let size = serde_json::to_string(value).map_or(usize::MAX, |s| s.len());
        if size > MAX_BYTES {
            return Err(refuse("", format!("is {size} bytes; at most {MAX_BYTES}")));
        }
        let root = Parser { nodes: 0 }.filter(value, "", 0)?;
        Ok(Filter {
            source: value.clone(),
            root,
        })
    }

    /// The document it was given.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Parses stored filter text (validated when it was set).
    pub fn from_json(text: &str) -> Result<Self, FilterError> {
        let value: Value = serde_json::from_str(text).map_err(|e| refuse("", e.to_string()))?;
        Self::parse(&value)
    }

    /// Whether an event of `event_type` with `payload` passes.
    pub fn matches(&self, event_type: &str, payload: &Value) -> bool {
        self.root.holds(event_type, payload)
    }
}

impl Parser {
    fn filter(&mut self, value: &Value, at: &str, depth: usize) -> Result<Node, FilterError> {
        if depth > MAX_DEPTH {
            return Err(refuse(at, format!("nests deeper than {MAX_DEPTH} levels")));
        }
        let Value::Object(map) = value else {
            return Err(refuse(at, "must be an object of paths and operators"));
        };
        if map.is_empty() {
            return Err(refuse(
                at,
                "is empty; leave the filter out to take every event",
            ));
        }
        let mut all = Vec::with_capacity(map.len());
        for (key, inner) in map {
            let here = join(at, key);
            self.nodes += 1;
            if self.nodes > MAX_NODES {
                return Err(refuse(&here, format!("more than {MAX_NODES} conditions")));
            }
            all.push(match key.as_str() {
                "$and" | "$or" => {
                    let list = self.list(inner, &here)?;
                    let parts = (list.iter().enumerate())
                        .map(|(i, f)| self.filter(f, &format!("{here}[{i}]"), depth + 1))
                        .collect::<Result<Vec<_>, _>>()?;
                    if key == "$and" {
                        Node::All(parts)
                    } else {
                        Node::Any(parts)
                    }
                }
                "$not" => Node::Not(Box::new(self.filter(inner, &here, depth + 1)?)),
                op if op.starts_with('$') => {
                    return Err(refuse(
                        &here,
                        format!("unknown operator {op:?} here (use $and, $or, $not or a path)"),
                    ));
                }
                path => Node::Path(segments(path, &here)?, tests(inner, &here)?),
            });
        }
        Ok(if all.len() == 1 {
            all.pop().unwrap_or(Node::All(Vec::new()))
        } else {
            Node::All(all)
        })
    }

    fn list<'v>(&self, value: &'v Value, at: &str) -> Result<&'v Vec<Value>, FilterError> {
        match value {
            Value::Array(list) if !list.is_empty() => Ok(list),
            _ => Err(refuse(at, "must be a non-empty list of filters")),
        }
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

fn segments(path: &str, at: &str) -> Result<Vec<String>, FilterError> {
    let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
    if parts.iter().any(String::is_empty) {
        return Err(refuse(
            at,
            "a path has no empty segments (payload.order.total)",
        ));
    }
    if parts.len() > MAX_SEGMENTS {
        return Err(refuse(at, format!("more than {MAX_SEGMENTS} segments")));
    }
    match parts[0].as_str() {
        "payload" => Ok(parts),
        "event_type" if parts.len() == 1 => Ok(parts),
        _ => Err(refuse(
            at,
            "a path starts with `payload` (payload.order.total) or is `event_type`",
        )),
    }
}

fn tests(value: &Value, at: &str) -> Result<Vec<Test>, FilterError> {
    let Value::Object(ops) = value else {
        return Ok(vec![Test::Eq(value.clone())]);
    };
    if !ops.keys().any(|k| k.starts_with('$')) {
        return Ok(vec![Test::Eq(value.clone())]);
    }
    let mut tests = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        let here = join(at, op);
        tests.push(match op.as_str() {
            "$eq" => Test::Eq(arg.clone()),
            "$ne" => Test::Ne(arg.clone()),
            "$in" => Test::In(values(arg, &here)?),
            "$nin" => Test::Nin(values(arg, &here)?),
            "$gt" => Test::Cmp(Ordering::Greater, false, comparable(arg, &here)?),
            "$gte" => Test::Cmp(Ordering::Greater, true, comparable(arg, &here)?),
            "$lt" => Test::Cmp(Ordering::Less, false, comparable(arg, &here)?),
            "$lte" => Test::Cmp(Ordering::Less, true, comparable(arg, &here)?),
            "$exists" => match arg {
                Value::Bool(b) => Test::Exists(*b),
                _ => return Err(refuse(&here, "takes true or false")),
            },
            other => {
                return Err(refuse(
                    &here,
                    format!(
                        "unknown operator {other:?} (known: $eq, $ne, $in, $nin, $gt, $gte, \
                         $lt, $lte, $exists)"
                    ),
                ));
            }
        });
    }
    Ok(tests)
}

fn values(arg: &Value, at: &str) -> Result<Vec<Value>, FilterError> {
    match arg {
        Value::Array(list) if list.len() <= MAX_LIST => Ok(list.clone()),
        Value::Array(_) => Err(refuse(at, format!("at most {MAX_LIST} values"))),
        _ => Err(refuse(at, "takes a list of values")),
    }
}

fn comparable(arg: &Value, at: &str) -> Result<Value, FilterError> {
    match arg {
        Value::Number(_) | Value::String(_) => Ok(arg.clone()),
        _ => Err(refuse(at, "compares with a number or a string")),
    }
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => order(a, b) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

/// The order of two numbers or two strings; `None` across types.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn lookup<'v>(event_type: &'v Value, payload: &'v Value, path: &[String]) -> Option<&'v Value> {
    let (first, rest) = path.split_first()?;
    let mut at = match first.as_str() {
        "event_type" => return Some(event_type),
        _ => payload,
    };
    for segment in rest {
        at = match at {
            Value::Object(map) => map.get(segment)?,
            Value::Array(list) => list.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

impl Node {
    fn holds(&self, event_type: &str, payload: &Value) -> bool {
        match self {
            Node::All(nodes) => nodes.iter().all(|n| n.holds(event_type, payload)),
            Node::Any(nodes) => nodes.iter().any(|n| n.holds(event_type, payload)),
            Node::Not(node) => !node.holds(event_type, payload),
            Node::Path(path, tests) => {
                let event_type = Value::String(event_type.to_owned());
                let found = lookup(&event_type, payload, path);
                tests.iter().all(|t| t.holds(found))
            }
        }
    }
}

impl Test {
    fn holds(&self, found: Option<&Value>) -> bool {
        match (self, found) {
            (Test::Exists(wanted), found) => found.is_some() == *wanted,
            (Test::Ne(v), found) => !found.is_some_and(|f| same(f, v)),
            (Test::Nin(list), found) => !found.is_some_and(|f| list.iter().any(|v| same(f, v))),
            (_, None) => false,
            (Test::Eq(v), Some(f)) => same(f, v),
            (Test::In(list), Some(f)) => list.iter().any(|v| same(f, v)),
            (Test::Cmp(wanted, or_equal, v), Some(f)) => match order(f, v) {
                Some(Ordering::Equal) => *or_equal,
                Some(o) => o == *wanted,
                None => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn passes(filter: Value, event_type: &str, payload: Value) -> bool {
        Filter::parse(&filter)
            .expect("valid filter")
            .matches(event_type, &payload)
    }

    #[test]
    fn paths_literals_and_operators() {
        let order = json!({"total": 120, "currency": "EUR", "customer": {"tier": "gold"},
                           "items": [{"sku": "a"}], "note": null});
        assert!(passes(
            json!({"payload.currency": "EUR"}),
            "order.paid",
            order.clone()
        ));
        assert!(passes(
            json!({"payload.total": 120.0}),
            "order.paid",
            order.clone()
        ));
        assert!(!passes(
            json!({"payload.currency": "USD"}),
            "order.paid",
            order.clone()
        ));
        assert!(passes(
            json!({"payload.total": {"$gt": 100, "$lte": 120}}),
            "x",
            order.clone()
        ));
        assert!(!passes(
            json!({"payload.total": {"$gt": 120}}),
            "x",
            order.clone()
        ));
        assert!(
            !passes(json!({"payload.total": {"$gt": "100"}}), "x", order.clone()),
            "across types"
        );
        assert!(passes(
            json!({"payload.customer.tier": {"$in": ["gold", "platinum"]}}),
            "x",
            order.clone()
        ));
        assert!(passes(
            json!({"payload.customer.tier": {"$nin": ["basic"]}}),
            "x",
            order.clone()
        ));
        assert!(passes(
            json!({"payload.items.0.sku": "a"}),
            "x",
            order.clone()
        ));
        assert!(passes(json!({"payload.note": null}), "x", order.clone()));
        assert!(passes(
            json!({"payload.note": {"$exists": true}}),
            "x",
            order.clone()
        ));
        assert!(passes(
            json!({"payload.missing": {"$exists": false}}),
            "x",
            order.clone()
        ));
        assert!(!passes(
            json!({"payload.missing": {"$in": [1]}}),
            "x",
            order.clone()
        ));
        assert!(passes(
            json!({"payload.missing": {"$nin": [1], "$ne": 2}}),
            "x",
            order.clone()
        ));
        assert!(passes(
            json!({"event_type": {"$in": ["order.paid"]}}),
            "order.paid",
            order.clone()
        ));
    }

    #[test]
    fn combinators() {
        let p = json!({"total": 50, "country": "FR"});
        let filter = json!({"$or": [{"payload.total": {"$gte": 100}}, {"payload.country": "FR"}],
                            "$not": {"payload.country": "DE"}});
        assert!(passes(filter.clone(), "x", p));
        assert!(!passes(filter, "x", json!({"total": 50, "country": "DE"})));
        assert!(!passes(
            json!({"$and": [{"payload.total": 50}, {"payload.country": "IT"}]}),
            "x",
            json!({"total": 50})
        ));
    }

    #[test]
    fn bad_filters_name_the_place_and_the_operator() {
        let error = |f: Value| Filter::parse(&f).expect_err("refused");
        let e = error(json!({"payload.total": {"$gt": 1, "$between": [1, 2]}}));
        assert_eq!(e.path, "payload.total.$between");
        assert!(e.message.contains("$between"), "{e}");
        assert_eq!(
            error(json!({"$or": [{"payload.a": 1}, {"$xor": []}]})).path,
            "$or[1].$xor"
        );
        assert_eq!(
            error(json!({"total": 1})).path,
            "total",
            "paths start with payload"
        );
        assert_eq!(error(json!({"payload..a": 1})).path, "payload..a");
        assert_eq!(
            error(json!({"payload.a": {"$in": 3}})).path,
            "payload.a.$in"
        );
        assert_eq!(
            error(json!({"payload.a": {"$gt": [1]}})).path,
            "payload.a.$gt"
        );
        assert_eq!(
            error(json!({"payload.a": {"$exists": 1}})).path,
            "payload.a.$exists"
        );
        assert_eq!(error(json!({"$or": []})).path, "$or");
        assert!(error(json!([1])).message.contains("object"));
        assert!(error(json!({})).message.contains("empty"));
        let mut deep = json!({"payload.a": 1});
        for _ in 0..=MAX_DEPTH {
            deep = json!({ "$not": deep });
        }
        assert!(error(deep).message.contains("deeper"));
        let many: Map<String, Value> = (0..=MAX_NODES)
            .map(|i| (format!("payload.f{i}"), json!(i)))
            .collect();
        assert!(error(Value::Object(many)).message.contains("conditions"));
        let long = json!({"payload.a": {"$in": vec![json!("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"); 100]}});
        assert!(error(long).message.contains("bytes"));
    }

    #[test]
    fn stored_text_parses_as_the_document_did() {
        let filter = json!({"payload.total": {"$gt": 100}});
        assert_eq!(
            Filter::from_json(&filter.to_string()),
            Filter::parse(&filter)
        );
    }
}
