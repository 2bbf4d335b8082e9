//! Values generated from the JSON schemas of the OpenAPI document, with the
//! randomness of the caller's proptest runner (no I/O here).
//!
//! * Valid values honour every keyword the document uses. A keyword this
//!   generator does not know stops the test instead of being ignored, so a
//!   constraint added to the document cannot turn generated "valid" values
//!   into invalid ones unnoticed.
//! * Integers come both as `1922` and as `1922.0`: JSON Schema's `integer`
//!   is any number with a zero fractional part.
//! * Invalid values are made by mutating valid ones (or, for a parameter,
//!   by drawing from what usually breaks a schema); the caller keeps only
//!   those the document's own validator refuses.

use anyhow::{Context, bail};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Map, Value};

/// Keywords that only describe.
const ANNOTATIONS: [&str; 3] = ["description", "default", "title"];
/// Keywords the generator honours.
const CONSTRAINTS: [&str; 15] = [
    "$ref",
    "type",
    "enum",
    "anyOf",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
];
/// Items of an array without `maxItems`: at most this many above `minItems`.
const EXTRA_ITEMS: u64 = 4;
/// Longest string generated where a schema gives no `maxLength`.
const DEFAULT_MAX_LENGTH: u64 = 300;
/// Integer bounds where a schema gives none (small enough that every one
/// is exact as a float, so `n.0` can be sent too).
const DEFAULT_INTEGER_BOUND: i64 = 1 << 40;

/// Draws one value of `strategy`.
pub fn sample<T: std::fmt::Debug>(
    runner: &mut TestRunner,
    strategy: impl Strategy<Value = T>,
) -> anyhow::Result<T> {
    let tree = strategy
        .new_tree(runner)
        .map_err(|reason| anyhow::anyhow!("generate a value: {reason}"))?;
    Ok(tree.current())
}

/// The schemas of one OpenAPI document.
pub struct Schemas<'a> {
    document: &'a Value,
}

impl<'a> Schemas<'a> {
    /// The schemas of `document` (for its `$ref`s).
    pub fn new(document: &'a Value) -> Self {
        Schemas { document }
    }

    /// `schema` with its local `$ref`s followed; a `$ref` with constraints
    /// beside it is refused (they would be ignored).
    pub fn resolve(&self, schema: &'a Value) -> anyhow::Result<&'a Value> {
        let mut current = schema;
        for _ in 0..16 {
            let Some(reference) = current.get("$ref").and_then(Value::as_str) else {
                return Ok(current);
            };
            let beside = current
                .as_object()
                .into_iter()
                .flatten()
                .any(|(keyword, _)| keyword != "$ref" && !ANNOTATIONS.contains(&keyword.as_str()));
            if beside {
                bail!("a $ref with constraints beside it is not supported: {current}");
            }
            let pointer = reference
                .strip_prefix('#')
                .with_context(|| format!("non-local $ref {reference}"))?;
            current = self
                .document
                .pointer(pointer)
                .with_context(|| format!("dangling $ref {reference}"))?;
        }
        bail!("a $ref chain longer than 16 at {schema}")
    }

    /// A value valid by `schema`.
    pub fn valid(&self, runner: &mut TestRunner, schema: &Value) -> anyhow::Result<Value> {
        let schema = self.resolve(schema)?;
        check_keywords(schema)?;
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            return sample(runner, prop::sample::select(options.clone()));
        }
        if let Some(branches) = schema.get("anyOf").and_then(Value::as_array) {
            let branch = sample(runner, prop::sample::select(branches.clone()))?;
            return self.valid(runner, &branch);
        }
        let types: Vec<String> = match &schema["type"] {
            Value::String(name) => vec![name.clone()],
            Value::Array(names) => names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            other => bail!("a schema without a type: {schema} (type {other})"),
        };
        match sample(runner, prop::sample::select(types))?.as_str() {
            "null" => Ok(Value::Null),
            "boolean" => Ok(Value::Bool(sample(runner, any::<bool>())?)),
            "integer" => integer(runner, schema),
            "string" => string(runner, schema).map(Value::String),
            "array" => self.array(runner, schema),
            "object" => self.object(runner, schema),
            other => bail!("type {other} is not supported by the generator"),
        }
    }

    fn array(&self, runner: &mut TestRunner, schema: &Value) -> anyhow::Result<Value> {
        let min_items = schema["minItems"].as_u64().unwrap_or(0);
        let max_items = schema["maxItems"]
            .as_u64()
            .unwrap_or(min_items + EXTRA_ITEMS);
        let length = sample(runner, min_items..=max_items)?;
        let mut items = Vec::new();
        for _ in 0..length {
            items.push(self.valid(runner, &schema["items"])?);
        }
        Ok(Value::Array(items))
    }

    fn object(&self, runner: &mut TestRunner, schema: &Value) -> anyhow::Result<Value> {
        match schema.get("additionalProperties") {
            None | Some(Value::Bool(false)) => {}
            Some(other) => bail!("additionalProperties {other} is not supported"),
        }
        let required: Vec<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut object = Map::new();
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            let include = required.contains(&name.as_str()) || sample(runner, any::<bool>())?;
            if include {
                object.insert(name.clone(), self.valid(runner, property)?);
            }
        }
        Ok(Value::Object(object))
    }

    /// A text for a parameter of `schema` that the schema refuses, if one
    /// turns up; `refuses` is the document's validator.
    pub fn invalid_text(
        &self,
        runner: &mut TestRunner,
        schema: &Value,
        refuses: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Option<String>> {
        let schema = self.resolve(schema)?;
        for _ in 0..100 {
            let candidate = if schema["type"] == "integer" {
                invalid_integer(runner, schema)?
            } else {
                // Empty, or any characters up to a little too long.
                let max_length = schema["maxLength"].as_u64().unwrap_or(DEFAULT_MAX_LENGTH);
                let length = 0..=usize::try_from(max_length + 10)?;
                let text = prop_oneof![
                    1 => Just(String::new()),
                    7 => prop::collection::vec(any::<char>(), length)
                        .prop_map(|chars| chars.into_iter().collect::<String>()),
                ];
                Value::String(sample(runner, text)?)
            };
            if refuses(&candidate) {
                return text_of(&candidate).map(Some);
            }
        }
        Ok(None)
    }

    /// `value` changed in one place so that the schema may refuse it (the
    /// caller checks): one node replaced by any JSON, an object without
    /// one of its properties or with an unknown one, an object given as
    /// the array of its values (which serde's derived structs read too).
    pub fn mutated(&self, runner: &mut TestRunner, value: &Value) -> anyhow::Result<Value> {
        let mut mutated = value.clone();
        let pointers = node_pointers(&mutated, String::new());
        let pointer = sample(runner, prop::sample::select(pointers))?;
        let node = mutated
            .pointer_mut(&pointer)
            .context("a pointer of the value itself")?;
        match sample(runner, 0..4u8)? {
            0 => *node = sample(runner, any_json())?,
            1 => match node {
                Value::Object(object) if !object.is_empty() => {
                    let keys: Vec<String> = object.keys().cloned().collect();
                    object.remove(&sample(runner, prop::sample::select(keys))?);
                }
                _ => *node = sample(runner, any_json())?,
            },
            2 => match node {
                Value::Object(object) => {
                    object.insert("unexpected".to_owned(), sample(runner, any_json())?);
                }
                _ => *node = sample(runner, any_json())?,
            },
            _ => match node {
                Value::Object(object) => {
                    *node = Value::Array(object.values().cloned().collect());
                }
                _ => *node = sample(runner, any_json())?,
            },
        }
        Ok(mutated)
    }
}

/// Refuses schemas with keywords the generator does not honour.
fn check_keywords(schema: &Value) -> anyhow::Result<()> {
    for keyword in schema.as_object().into_iter().flatten().map(|(key, _)| key) {
        if !ANNOTATIONS.contains(&keyword.as_str()) && !CONSTRAINTS.contains(&keyword.as_str()) {
            bail!("schema keyword `{keyword}` is not supported by the generator: {schema}");
        }
    }
    Ok(())
}

/// An integer within the schema's bounds, as `n` or (one time in four)
/// as the float `n.0`.
fn integer(runner: &mut TestRunner, schema: &Value) -> anyhow::Result<Value> {
    let minimum = schema["minimum"].as_i64().unwrap_or(-DEFAULT_INTEGER_BOUND);
    let maximum = schema["maximum"].as_i64().unwrap_or(DEFAULT_INTEGER_BOUND);
    let number = sample(runner, minimum..=maximum)?;
    if sample(runner, 0..4u8)? == 0 {
        // Exact: the bounds are below 2^53.
        return Ok(Value::from(number as f64));
    }
    Ok(Value::from(number))
}

/// A string from the schema's pattern (or of any characters) within its
/// lengths.
fn string(runner: &mut TestRunner, schema: &Value) -> anyhow::Result<String> {
    let min_length = usize::try_from(schema["minLength"].as_u64().unwrap_or(0))?;
    let max_length = usize::try_from(schema["maxLength"].as_u64().unwrap_or(DEFAULT_MAX_LENGTH))?;
    let text = match schema["pattern"].as_str() {
        Some(pattern) => {
            let unanchored = pattern.trim_start_matches('^').trim_end_matches('$');
            proptest::string::string_regex(unanchored)
                .with_context(|| format!("pattern {pattern:?}"))?
                .boxed()
        }
        None => prop::collection::vec(any::<char>(), min_length..=max_length)
            .prop_map(|chars| chars.into_iter().collect::<String>())
            .boxed(),
    };
    sample(
        runner,
        text.prop_filter("length within the schema", move |text| {
            (min_length..=max_length).contains(&text.chars().count())
        }),
    )
}

/// What usually breaks an integer schema: below its minimum, above its
/// maximum, a fraction, a word. (Never a text whose reading as a number is
/// a matter of taste, such as `+5` or `05`.)
fn invalid_integer(runner: &mut TestRunner, schema: &Value) -> anyhow::Result<Value> {
    let minimum = schema["minimum"].as_i64().unwrap_or(-DEFAULT_INTEGER_BOUND);
    let maximum = schema["maximum"].as_i64().unwrap_or(DEFAULT_INTEGER_BOUND);
    Ok(match sample(runner, 0..4u8)? {
        0 => Value::from(minimum - sample(runner, 1..=1000i64)?),
        1 => Value::from(maximum + sample(runner, 1..=1000i64)?),
        2 => {
            let whole = sample(runner, minimum..=maximum)? as f64;
            Value::from(whole + 0.5)
        }
        _ => Value::String(sample(runner, "[a-z]{0,8}")?),
    })
}

/// A parameter value as sent in a path or query: a string as itself, a
/// number as its JSON text.
pub fn text_of(value: &Value) -> anyhow::Result<String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        other => bail!("a parameter value must be a string or a number, not {other}"),
    }
}

/// JSON pointers of every node of `value`, the root (`""`) included.
fn node_pointers(value: &Value, at: String) -> Vec<String> {
    let mut pointers = vec![at.clone()];
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                pointers.extend(node_pointers(child, format!("{at}/{escaped}")));
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                pointers.extend(node_pointers(child, format!("{at}/{index}")));
            }
        }
        _ => {}
    }
    pointers
}

/// Any JSON value, shallow.
fn any_json() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6..1e6f64).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    prop_oneof![
        3 => scalar.clone(),
        1 => prop::collection::vec(scalar.clone(), 0..3).prop_map(Value::Array),
        1 => prop::collection::btree_map("[a-z_]{1,8}", scalar, 0..3)
            .prop_map(|map| Value::Object(map.into_iter().collect())),
    ]
}
