//! Every key a settings type accepts, read from its own `Deserialize` implementation: a
//! deserializer that answers each struct with all of the fields serde says it knows, each
//! sequence with one element and each option with a value, and records the path of every
//! field it is asked for. A leaf that refuses the walker's stand-in value (an address, a
//! decimal) is left out on the next walk; its key is recorded already, by its parent.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::de::value::{Error, MapDeserializer};
use serde::de::{
    DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

#[derive(Default)]
struct State {
    keys: BTreeSet<String>,
    skip: BTreeSet<String>,
    failed: Option<String>,
}

/// Dotted paths of every key `T` accepts: `server.listen`, `plans` and `plans[].name` for an
/// array of tables. Maps with free keys are named, not their entries.
pub fn accepted_keys<T: DeserializeOwned>() -> BTreeSet<String> {
    let state = RefCell::new(State::default());
    loop {
        state.borrow_mut().failed = None;
        let walk = Walk {
            path: String::new(),
            state: &state,
        };
        match T::deserialize(walk) {
            Ok(_) => return std::mem::take(&mut state.borrow_mut().keys),
            Err(e) => {
                let mut s = state.borrow_mut();
                let failed = s
                    .failed
                    .take()
                    .unwrap_or_else(|| panic!("walk failed: {e}"));
                assert!(s.skip.insert(failed.clone()), "{failed} failed twice: {e}");
            }
        }
    }
}

struct Walk<'a> {
    path: String,
    state: &'a RefCell<State>,
}

/// Deserializes `seed` at `path`, remembering the first (innermost) path that failed.
fn at<'de, S: DeserializeSeed<'de>>(
    seed: S,
    path: String,
    state: &RefCell<State>,
) -> Result<S::Value, Error> {
    let out = seed.deserialize(Walk {
        path: path.clone(),
        state,
    });
    if out.is_err() {
        state.borrow_mut().failed.get_or_insert(path);
    }
    out
}

struct Fields<'a> {
    parent: String,
    fields: Vec<&'static str>,
    state: &'a RefCell<State>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.fields.first() {
            None => Ok(None),
            Some(f) => seed
                .deserialize(IntoDeserializer::<Error>::into_deserializer(*f))
                .map(Some),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let field = self.fields.remove(0);
        at(seed, child(&self.parent, field), self.state)
    }
}

struct One<'a> {
    path: Option<String>,
    state: &'a RefCell<State>,
}

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.path.take() {
            None => Ok(None),
            Some(path) => at(seed, path, self.state).map(Some),
        }
    }
}

fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

macro_rules! leaf {
    ($($method:ident => |$v:ident| $body:expr;)*) => {
        $(fn $method<V: Visitor<'de>>(self, $v: V) -> Result<V::Value, Error> { $body })*
    };
}

impl<'de> serde::Deserializer<'de> for Walk<'_> {
    type Error = Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let mut s = self.state.borrow_mut();
        let mut kept = Vec::new();
        for f in fields {
            let path = child(&self.path, f);
            if !s.skip.contains(&path) {
                kept.push(*f);
            }
            s.keys.insert(path);
        }
        drop(s);
        visitor.visit_map(Fields {
            parent: self.path,
            fields: kept,
            state: self.state,
        })
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let element = format!("{}[]", self.path);
        let skip = self.state.borrow().skip.contains(&element);
        visitor.visit_seq(One {
            path: (!skip).then_some(element),
            state: self.state,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(IntoDeserializer::<Error>::into_deserializer(variants[0]))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(MapDeserializer::new(std::iter::empty::<(String, String)>()))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    leaf! {
        deserialize_any => |v| v.visit_u64(1);
        deserialize_bool => |v| v.visit_bool(false);
        deserialize_i8 => |v| v.visit_u64(1);
        deserialize_i16 => |v| v.visit_u64(1);
        deserialize_i32 => |v| v.visit_u64(1);
        deserialize_i64 => |v| v.visit_u64(1);
        deserialize_u8 => |v| v.visit_u64(1);
        deserialize_u16 => |v| v.visit_u64(1);
        deserialize_u32 => |v| v.visit_u64(1);
        deserialize_u64 => |v| v.visit_u64(1);
        deserialize_f32 => |v| v.visit_f64(1.0);
        deserialize_f64 => |v| v.visit_f64(1.0);
        deserialize_char => |v| v.visit_char('x');
        deserialize_str => |v| v.visit_str("1s");
        deserialize_string => |v| v.visit_str("1s");
        deserialize_bytes => |v| v.visit_bytes(b"");
        deserialize_byte_buf => |v| v.visit_bytes(b"");
        deserialize_unit => |v| v.visit_unit();
        deserialize_identifier => |v| v.visit_str("1s");
        deserialize_ignored_any => |v| v.visit_unit();
    }
}
