//! The query parameters every list route takes, as RabbitMQ reads them:
//! `sort` / `sort_reverse` (a dotted field), `columns` (a projection), and
//! pagination (`page`, `page_size`, `name`, `use_regex`), which is active
//! only when `page` is given: then the answer is a wrapper object with
//! `items`, and the name filter applies.

use std::cmp::Ordering;
use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;

/// Items per page unless `page_size` says otherwise.
const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest `page_size` RabbitMQ accepts.
const MAX_PAGE_SIZE: usize = 500;
/// Longest `name` regex accepted.
const MAX_REGEX_LEN: usize = 1024;

/// The query string's parameters (unknown ones are ignored).
pub type Params = HashMap<String, String>;

/// The `limit` query parameter: `default` when absent, at most `max`; a
/// 400 unless a positive integer.
pub fn limit_param(params: &Params, default: usize, max: usize) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .map(|n| n.min(max))
            .ok_or_else(|| ApiError::bad_request("limit must be a positive integer")),
    }
}

/// Sort, filter, page and project `items` as the parameters ask.
pub fn respond(mut items: Vec<Value>, params: &Params) -> Result<Value, ApiError> {
    sort(&mut items, params);
    let Some(page) = params.get("page") else {
        return Ok(Value::Array(project_all(items, params)));
    };
    let (page, page_size) = page_params(page, params)?;
    let total_count = items.len();
    if let Some(name) = params.get("name").filter(|n| !n.is_empty()) {
        let matches = name_filter(name, params.get("use_regex").is_some_and(|r| r == "true"))?;
        items.retain(|i| i.get("name").and_then(Value::as_str).is_some_and(&matches));
    }
    let filtered_count = items.len();
    let page_count = check_page(page, page_size, filtered_count)?;
    let page_items: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .collect();
    Ok(json!({
        "filtered_count": filtered_count,
        "item_count": page_items.len(),
        "items": project_all(page_items, params),
        "page": page,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total_count,
    }))
}

/// Like [`respond`] for typed items already in the default order (by
/// vhost, then name): unless a sort other than by name is asked for, the
/// name filter
/// and the page are applied to the items themselves, and only what is
/// answered is turned into JSON (a page of 100 out of 10,000 queues
/// formats 100).
pub fn respond_typed<T, J: Serialize>(
    mut items: Vec<T>,
    params: &Params,
    name: impl Fn(&T) -> &str,
    render: impl Fn(&T) -> J,
) -> Result<Response, ApiError> {
    let value = |i: &T| serde_json::to_value(render(i)).unwrap_or(Value::Null);
    let sort_key = params.get("sort").map(String::as_str).unwrap_or("");
    match sort_key {
        "" => {}
        // The UI's default: sorted by the name itself, no JSON needed.
        "name" => items.sort_by(|a, b| name(a).cmp(name(b))),
        _ => {
            let values = items.iter().map(value).collect();
            return Ok(Json(respond(values, params)?).into_response());
        }
    }
    // As `sort`: an empty `sort=` keeps the order, reversed or not.
    let sorted = sort_key == "name" || !params.contains_key("sort");
    if sorted && params.get("sort_reverse").is_some_and(|r| r == "true") {
        items.reverse();
    }
    let cols = columns(params);
    let Some(page) = params.get("page") else {
        return Ok(match cols {
            None => Json(items.iter().map(render).collect::<Vec<J>>()).into_response(),
            Some(c) => {
                let projected: Vec<Value> = items.iter().map(|i| project(&value(i), &c)).collect();
                Json(projected).into_response()
            }
        });
    };
    let (page, page_size) = page_params(page, params)?;
    let total_count = items.len();
    if let Some(filter) = params.get("name").filter(|n| !n.is_empty()) {
        let matches = name_filter(filter, params.get("use_regex").is_some_and(|r| r == "true"))?;
        items.retain(|i| matches(name(i)));
    }
    let filtered_count = items.len();
    let page_count = check_page(page, page_size, filtered_count)?;
    let page_items: Vec<Value> = items
        .iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .map(|i| match &cols {
            Some(c) => project(&value(i), c),
            None => value(i),
        })
        .collect();
    Ok(Json(json!({
        "filtered_count": filtered_count,
        "item_count": page_items.len(),
        "items": page_items,
        "page": page,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total_count,
    }))
    .into_response())
}

/// `page` and `page_size` as numbers, or 400.
fn page_params(page: &str, params: &Params) -> Result<(usize, usize), ApiError> {
    let bad = || ApiError::bad_request("Pagination parameters are invalid");
    let page: usize = page.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    let page_size = match params.get("page_size") {
        None => DEFAULT_PAGE_SIZE,
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(bad)?,
    };
    Ok((page, page_size))
}

/// The page count, or 400 `page_out_of_range`.
fn check_page(page: usize, page_size: usize, filtered_count: usize) -> Result<usize, ApiError> {
    let page_count = filtered_count.div_ceil(page_size).max(1);
    if page > page_count {
        return Err(ApiError {
            error: "page_out_of_range",
            ..ApiError::bad_request(format!(
                "Page out of range, page: {page} page size: {page_size}, len: {filtered_count}"
            ))
        });
    }
    Ok(page_count)
}

/// The parameters with no default sort: the items keep their order (a
/// queue's default binding first, consumers by channel) unless the
/// caller asks for one.
pub fn unsorted(p: &Params) -> Params {
    let mut q = p.clone();
    q.entry("sort".into()).or_default();
    q
}

/// Answer one object, projected by `columns` if given.
pub fn respond_one(item: Value, params: &Params) -> Value {
    match columns(params) {
        Some(cols) => project(&item, &cols),
        None => item,
    }
}

/// A name matcher: a caseless regex, or a caseless substring.
fn name_filter(name: &str, regex: bool) -> Result<impl Fn(&str) -> bool, ApiError> {
    let re = match regex {
        true if name.len() > MAX_REGEX_LEN => {
            return Err(ApiError::bad_request("regex is too long"))
        }
        true => Some(
            regex::RegexBuilder::new(name)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| ApiError::bad_request(format!("invalid regex: {e}")))?,
        ),
        false => None,
    };
    let needle = name.to_lowercase();
    Ok(move |s: &str| match &re {
        Some(re) => re.is_match(s),
        None => s.to_lowercase().contains(&needle),
    })
}

fn sort(items: &mut [Value], params: &Params) {
    let keys: Vec<String> = match params.get("sort") {
        Some(s) if s.is_empty() => return,
        Some(s) => vec![s.clone()],
        None => vec!["vhost".into(), "name".into()],
    };
    items.sort_by(|a, b| {
        keys.iter()
            .map(|k| compare(lookup(a, k), lookup(b, k)))
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    });
    if params.get("sort_reverse").is_some_and(|r| r == "true") {
        items.reverse();
    }
}

/// A dotted field of an item.
fn lookup<'a>(item: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(item, |v, k| v.get(k))
}

/// Numbers by value, strings by text; a missing key sorts as 0.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let zero = Value::from(0);
    let (a, b) = (a.unwrap_or(&zero), b.unwrap_or(&zero));
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Number(_), _) => Ordering::Less,
        (_, Value::Number(_)) => Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

fn columns(params: &Params) -> Option<Vec<Vec<String>>> {
    let cols = params.get("columns").filter(|c| !c.is_empty())?;
    Some(
        cols.split(',')
            .map(|c| c.trim().split('.').map(str::to_string).collect())
            .collect(),
    )
}

fn project_all(items: Vec<Value>, params: &Params) -> Vec<Value> {
    match columns(params) {
        Some(cols) => items.iter().map(|i| project(i, &cols)).collect(),
        None => items,
    }
}

/// Keep only the given dotted columns of an item.
fn project(item: &Value, cols: &[Vec<String>]) -> Value {
    let mut out = Map::new();
    for path in cols {
        let Some(v) = path.iter().try_fold(item, |v, k| v.get(k)) else {
            continue;
        };
        let mut slot = &mut out;
        for (i, k) in path.iter().enumerate() {
            if i + 1 == path.len() {
                slot.insert(k.clone(), v.clone());
                break;
            }
            let next = slot
                .entry(k.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            match next {
                Value::Object(m) => slot = m,
                _ => break,
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)]) -> Params {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn queues() -> Vec<Value> {
        ["b-q", "a-q", "Oracle-q", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"vhost": "/", "name": n, "messages": i, "message_stats": {"publish": 10 - i}}))
            .collect()
    }

    #[test]
    fn without_page_a_plain_sorted_array() {
        let v = respond(queues(), &params(&[("page_size", "2"), ("name", "zzz")])).unwrap();
        let names: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Oracle-q", "a-q", "b-q", "c"]);
    }

    #[test]
    fn pagination_with_a_caseless_regex_and_columns() {
        // As RabbitMQ 3.10 answered the same query.
        let q = params(&[
            ("page", "1"),
            ("page_size", "2"),
            ("name", "oracle"),
            ("use_regex", "true"),
            ("columns", "name,messages"),
        ]);
        let v = respond(queues(), &q).unwrap();
        assert_eq!(
            v,
            json!({"filtered_count":1,"item_count":1,"items":[{"messages":2,"name":"Oracle-q"}],
                   "page":1,"page_count":1,"page_size":2,"total_count":4})
        );
    }

    #[test]
    fn sort_by_a_nested_number_reversed() {
        let q = params(&[
            ("sort", "message_stats.publish"),
            ("sort_reverse", "true"),
            ("columns", "name,message_stats.publish"),
        ]);
        let v = respond(queues(), &q).unwrap();
        assert_eq!(
            v[0],
            json!({"name": "b-q", "message_stats": {"publish": 10}})
        );
        assert_eq!(v[3]["name"], "c");
    }

    /// The typed path's own sort by name answers what the JSON path does.
    #[test]
    fn typed_sort_by_name_matches_the_json_sort() {
        for reverse in ["false", "true"] {
            let q = params(&[
                ("sort", "name"),
                ("sort_reverse", reverse),
                ("page", "1"),
                ("page_size", "3"),
                ("name", "q"),
            ]);
            let typed =
                respond_typed(queues(), &q, |v| v["name"].as_str().unwrap(), Clone::clone).unwrap();
            let body =
                futures_lite::future::block_on(axum::body::to_bytes(typed.into_body(), 1 << 20))
                    .unwrap();
            let typed: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(typed, respond(queues(), &q).unwrap(), "reverse={reverse}");
        }
    }

    #[test]
    fn bad_parameters_are_400() {
        for q in [
            params(&[("page", "0")]),
            params(&[("page", "x")]),
            params(&[("page", "1"), ("page_size", "501")]),
            params(&[("page", "3"), ("page_size", "2")]),
            params(&[("page", "1"), ("name", "("), ("use_regex", "true")]),
        ] {
            let e = respond(queues(), &q).unwrap_err();
            assert_eq!(e.status, 400, "{q:?}");
        }
        let empty = respond(Vec::new(), &params(&[("page", "1")])).unwrap();
        assert_eq!(empty["page_count"], 1);
    }
}
