//! Header mutations of a route, compiled: the `*_headers_to_add` / `*_headers_to_remove` of
//! the route, its virtual host and the route configuration, flattened into one list per
//! direction in Envoy's order, values with command operators parsed once.

use http::{HeaderName, HeaderValue};

use crate::access_log::Format;
use crate::config::{AppendAction, HeaderAdd, HeaderMutations};
use crate::error::BuildError;

/// A route's mutations, request and response; `None` on a route without any (the common
/// case costs one branch).
#[derive(Debug, Default)]
pub struct Mutations {
    pub request: Vec<Op>,
    pub response: Vec<Op>,
}

/// One step, applied in order.
#[derive(Debug)]
pub enum Op {
    Remove(HeaderName),
    Add {
        name: HeaderName,
        value: Value,
        action: AppendAction,
        keep_empty: bool,
    },
}

/// A value to add: fixed, or rendered per message with Envoy's command operators.
#[derive(Debug)]
pub enum Value {
    Fixed(HeaderValue),
    Rendered(Format),
}

// === impl Mutations ===

impl Mutations {
    /// The levels in the order they apply (Envoy: the route's first, so the route
    /// configuration's win, unless `most_specific_header_mutations_wins`): each removes, then
    /// adds.
    pub fn compile(levels: &[&HeaderMutations]) -> Result<Option<Box<Self>>, BuildError> {
        if levels.iter().all(|l| l.is_empty()) {
            return Ok(None);
        }
        let mut m = Mutations::default();
        for level in levels {
            m.request
                .extend(level.request_remove.iter().cloned().map(Op::Remove));
            for a in &level.request_add {
                m.request.push(add(a)?);
            }
            m.response
                .extend(level.response_remove.iter().cloned().map(Op::Remove));
            for a in &level.response_add {
                m.response.push(add(a)?);
            }
        }
        Ok(Some(Box::new(m)))
    }
}

fn add(a: &HeaderAdd) -> Result<Op, BuildError> {
    let value = if a.value.contains('%') {
        Value::Rendered(
            Format::parse(&a.value).map_err(|source| BuildError::HeaderFormat {
                value: a.value.clone(),
                source,
            })?,
        )
    } else {
        let v = HeaderValue::from_str(&a.value).map_err(|_| BuildError::HeaderValue {
            value: a.value.clone(),
        })?;
        Value::Fixed(v)
    };
    Ok(Op::Add {
        name: a.name.clone(),
        value,
        action: a.action,
        keep_empty: a.keep_empty_value,
    })
}
