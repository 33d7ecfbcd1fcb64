//! A pickle reader that builds numpy arrays and containers, and nothing else.
//!
//! It understands the opcodes numpy's object arrays use, as Python 2 wrote them at protocol 2
//! (`numpy.core.multiarray._reconstruct`, `numpy.dtype`, BUILD states, raw data in
//! SHORT_BINSTRING/BINSTRING), Python 3 at protocol 2 (`_codecs.encode(text, 'latin1')` for
//! bytes) and protocols 3-5 as current numpy writes them (BINBYTES, FRAME, MEMOIZE,
//! STACK_GLOBAL, `numpy._core.multiarray`). Globals come from an allow-list; any other is an
//! error naming it. Nothing is ever executed.
//!
//! Hostile input is bounded: containers nest at most [`MAX_DEPTH`] levels (deeper values would
//! overflow the stack when dropped or printed), a stream runs at most [`MAX_OPS`] opcodes (each
//! costs at most a few dozen bytes of memory beyond the bytes it carries), and every check is
//! O(1) per opcode. Cycles (a container stored into itself, directly or not) are refused without
//! walking anything: a container may only be modified while it is not yet stored inside
//! another, which is how every pickler writes containers (filled, then used), and a container
//! that is not inside another can only be reached from itself.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::dtype::{Dtype, decode_array};
use crate::{ImportError, RawTensor};

/// Deepest nesting of containers (lists, tuples, dicts, object arrays) a pickle may build,
/// as burn's `.pth` reader allows. Weight dicts nest about five levels.
pub const MAX_DEPTH: usize = 1000;

/// Most opcodes one pickle may run. Weight files need a few hundred (array data is one opcode
/// however large); the cap bounds the memory of a stream of tiny values (`]` x 30 million
/// would build 30 million lists).
pub const MAX_OPS: usize = 1_000_000;

/// A value on the pickle stack.
#[derive(Clone, Debug)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string.
    Str(Rc<str>),
    /// A byte string (Python 2 `str`, Python 3 `bytes`).
    Bytes(Rc<[u8]>),
    /// A tuple.
    Tuple(Rc<[Value]>),
    /// A list.
    List(Rc<RefCell<Vec<Value>>>),
    /// A dict, in insertion order.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// An allowed global (callable).
    Global(Global),
    /// A numpy dtype under construction.
    Dtype(Rc<RefCell<Dtype>>),
    /// A numpy array under construction or built.
    Array(Rc<RefCell<Array>>),
}

/// The only globals a pickle may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    /// `numpy.core.multiarray._reconstruct` / `numpy._core.multiarray._reconstruct`.
    Reconstruct,
    /// `numpy.ndarray`.
    NdArray,
    /// `numpy.dtype`.
    Dtype,
    /// `_codecs.encode` (Python 3's way to write bytes at protocol 2).
    CodecsEncode,
}

/// A numpy array from a pickle.
#[derive(Clone, Debug, Default)]
pub enum Array {
    /// Created by `_reconstruct`, waiting for its BUILD state.
    #[default]
    Empty,
    /// A numeric array.
    Numeric(RawTensor),
    /// An object array (its elements).
    Object(Vec<usize>, Vec<Value>),
}

fn global(module: &str, name: &str, file: &str) -> Result<Global, ImportError> {
    match (module, name) {
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
            Ok(Global::Reconstruct)
        }
        ("numpy", "ndarray") => Ok(Global::NdArray),
        ("numpy", "dtype") => Ok(Global::Dtype),
        ("_codecs", "encode") => Ok(Global::CodecsEncode),
        _ => Err(ImportError::ForbiddenGlobal {
            file: file.to_string(),
            global: format!("{module}.{name}"),
        }),
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: impl Into<String>) -> ImportError {
        ImportError::corrupt(
            self.file,
            format!("pickle at byte {}: {}", self.pos, reason.into()),
        )
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ImportError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!(
                "truncated: {n} more bytes needed, {} left",
                self.data.len() - self.pos
            ))),
        }
    }

    fn u8(&mut self) -> Result<u8, ImportError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize, ImportError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }

    fn u32(&mut self) -> Result<u32, ImportError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<usize, ImportError> {
        let b = self.take(8)?;
        usize::try_from(u64::from_le_bytes(
            b.try_into().map_err(|_| self.err("short length"))?,
        ))
        .map_err(|_| self.err("length overflows"))
    }

    fn line(&mut self) -> Result<&'a str, ImportError> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("unterminated line"))?;
        let s = std::str::from_utf8(&rest[..end]).map_err(|_| self.err("line is not UTF-8"))?;
        self.pos += end + 1;
        Ok(s)
    }
}

/// The nesting depth of every container built so far, and whether it is stored inside another
/// container yet, keyed by the address of its shared allocation. Each container is registered
/// when it is created, so an address reused after a container was freed gets a fresh entry.
///
/// This is what makes the cycle check O(1): only containers not yet stored anywhere may be
/// modified, and nothing but the container itself can reach such a container.
#[derive(Default)]
struct Containers {
    meta: HashMap<usize, Meta>,
}

#[derive(Clone, Copy)]
struct Meta {
    depth: usize,
    stored: bool,
}

/// Identity of a container (list, dict, tuple or array), `None` for leaves.
fn container_addr(v: &Value) -> Option<usize> {
    match v {
        Value::List(l) => Some(Rc::as_ptr(l) as *const () as usize),
        Value::Dict(d) => Some(Rc::as_ptr(d) as *const () as usize),
        Value::Tuple(t) => Some(Rc::as_ptr(t) as *const () as usize),
        Value::Array(a) => Some(Rc::as_ptr(a) as *const () as usize),
        _ => None,
    }
}

impl Containers {
    fn too_deep(r: &Reader<'_>) -> ImportError {
        r.err(format!(
            "containers nested deeper than {MAX_DEPTH} levels (not weight data)"
        ))
    }

    /// Marks `children` as stored (they may no longer change) and returns one more than their
    /// deepest nesting.
    fn adopt<'v>(
        &mut self,
        children: impl IntoIterator<Item = &'v Value>,
        r: &Reader<'_>,
    ) -> Result<usize, ImportError> {
        let mut depth = 1;
        for c in children {
            if let Some(a) = container_addr(c) {
                let m = self.meta.entry(a).or_insert(Meta {
                    depth: 1,
                    stored: false,
                });
                m.stored = true;
                depth = depth.max(m.depth + 1);
            }
        }
        if depth > MAX_DEPTH {
            return Err(Self::too_deep(r));
        }
        Ok(depth)
    }

    /// Registers a container just built from `children` (a leaf is left alone).
    fn created<'v>(
        &mut self,
        v: &Value,
        children: impl IntoIterator<Item = &'v Value>,
        r: &Reader<'_>,
    ) -> Result<(), ImportError> {
        if let Some(a) = container_addr(v) {
            let depth = self.adopt(children, r)?;
            self.meta.insert(
                a,
                Meta {
                    depth,
                    stored: false,
                },
            );
        }
        Ok(())
    }

    /// Checks that `values` may be stored into `target` (no cycle, not too deep), and records
    /// it. `target` must not be stored anywhere yet, and no value may be `target` itself.
    fn store_into<'v>(
        &mut self,
        target: &Value,
        values: impl IntoIterator<Item = &'v Value>,
        r: &Reader<'_>,
    ) -> Result<(), ImportError> {
        let Some(t) = container_addr(target) else {
            return Ok(());
        };
        let current = self.meta.get(&t).copied().unwrap_or(Meta {
            depth: 1,
            stored: false,
        });
        if current.stored {
            return Err(r.err(
                "container modified after being stored inside another \
                 (recursive containers are not weight data)",
            ));
        }
        let values: Vec<&Value> = values.into_iter().collect();
        if values.iter().any(|v| container_addr(v) == Some(t)) {
            return Err(
                r.err("recursive container (a value that contains itself) is not weight data")
            );
        }
        let depth = self.adopt(values, r)?.max(current.depth);
        self.meta.insert(
            t,
            Meta {
                depth,
                stored: false,
            },
        );
        Ok(())
    }
}

/// Reads one pickled object (the whole stream up to STOP).
///
/// # Errors
/// [`ImportError::ForbiddenGlobal`] for globals outside the allow-list,
/// [`ImportError::Corrupt`] for truncated or malformed streams, unsupported opcodes, recursive
/// containers, nesting deeper than [`MAX_DEPTH`] and streams longer than [`MAX_OPS`] opcodes.
pub fn unpickle(data: &[u8], file: &str) -> Result<Value, ImportError> {
    let mut r = Reader { data, pos: 0, file };
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let mut containers = Containers::default();
    let mut ops = 0usize;

    macro_rules! pop {
        () => {
            stack.pop().ok_or_else(|| r.err("stack underflow"))?
        };
    }
    macro_rules! pop_mark {
        () => {{
            let m = marks.pop().ok_or_else(|| r.err("no MARK"))?;
            if m > stack.len() {
                return Err(r.err("MARK beyond stack"));
            }
            stack.split_off(m)
        }};
    }
    // Pushes a container built from `children` after registering it.
    macro_rules! push_built {
        ($value:expr, $children:expr) => {{
            let value = $value;
            containers.created(&value, $children, &r)?;
            stack.push(value);
        }};
    }

    loop {
        ops += 1;
        if ops > MAX_OPS {
            return Err(r.err(format!(
                "more than {MAX_OPS} opcodes (weight pickles need a few hundred)"
            )));
        }
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(r.err(format!("unsupported protocol {proto}")));
                }
            }
            0x95 => {
                r.take(8)?; // FRAME length: frames are read as one stream
            }
            b'.' => return stack.pop().ok_or_else(|| r.err("empty stack at STOP")),
            b'(' => marks.push(stack.len()),
            b')' => push_built!(Value::Tuple(Rc::from(Vec::new())), []),
            b't' => {
                let items = pop_mark!();
                push_built!(Value::Tuple(Rc::from(items.clone())), &items);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(r.err("stack underflow in TUPLEn"));
                }
                let items = stack.split_off(stack.len() - n);
                push_built!(Value::Tuple(Rc::from(items.clone())), &items);
            }
            b']' => push_built!(Value::List(Rc::new(RefCell::new(Vec::new()))), []),
            b'l' => {
                let items = pop_mark!();
                push_built!(Value::List(Rc::new(RefCell::new(items.clone()))), &items);
            }
            b'a' => {
                let v = pop!();
                match stack.last() {
                    Some(target @ Value::List(l)) => {
                        containers.store_into(target, [&v], &r)?;
                        l.borrow_mut().push(v);
                    }
                    _ => return Err(r.err("APPEND to a non-list")),
                }
            }
            b'e' => {
                let items = pop_mark!();
                match stack.last() {
                    Some(target @ Value::List(l)) => {
                        containers.store_into(target, &items, &r)?;
                        l.borrow_mut().extend(items);
                    }
                    _ => return Err(r.err("APPENDS to a non-list")),
                }
            }
            b'}' => push_built!(Value::Dict(Rc::new(RefCell::new(Vec::new()))), []),
            b'd' => {
                let items = pop_mark!();
                let value = Value::Dict(Rc::new(RefCell::new(pairs(items.clone(), &r)?)));
                push_built!(value, &items);
            }
            b's' => {
                let v = pop!();
                let k = pop!();
                match stack.last() {
                    Some(target @ Value::Dict(d)) => {
                        containers.store_into(target, [&k, &v], &r)?;
                        d.borrow_mut().push((k, v));
                    }
                    _ => return Err(r.err("SETITEM on a non-dict")),
                }
            }
            b'u' => {
                let items = pop_mark!();
                match stack.last() {
                    Some(target @ Value::Dict(d)) => {
                        containers.store_into(target, &items, &r)?;
                        d.borrow_mut().extend(pairs(items, &r)?);
                    }
                    _ => return Err(r.err("SETITEMS on a non-dict")),
                }
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => {
                let v = r.u32()? as i32;
                stack.push(Value::Int(v as i64));
            }
            b'K' => {
                let v = r.u8()?;
                stack.push(Value::Int(v as i64));
            }
            b'M' => {
                let v = r.u16()?;
                stack.push(Value::Int(v as i64));
            }
            0x8a => {
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return Err(r.err("LONG1 wider than 64 bits"));
                }
                let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                    [0xff; 8]
                } else {
                    [0; 8]
                };
                buf[..n].copy_from_slice(b);
                stack.push(Value::Int(i64::from_le_bytes(buf)));
            }
            b'G' => {
                let b = r.take(8)?;
                stack.push(Value::Float(f64::from_be_bytes(
                    b.try_into().map_err(|_| r.err("short float"))?,
                )));
            }
            b'U' => {
                let n = r.u8()? as usize;
                stack.push(Value::Bytes(Rc::from(r.take(n)?)));
            }
            b'T' => {
                let n = r.u32()? as usize;
                stack.push(Value::Bytes(Rc::from(r.take(n)?)));
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Value::Bytes(Rc::from(r.take(n)?)));
            }
            b'B' => {
                let n = r.u32()? as usize;
                stack.push(Value::Bytes(Rc::from(r.take(n)?)));
            }
            0x8e | 0x96 => {
                let n = r.u64()?;
                stack.push(Value::Bytes(Rc::from(r.take(n)?)));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(text(r.take(n)?, &r)?);
            }
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(text(r.take(n)?, &r)?);
            }
            0x8d => {
                let n = r.u64()?;
                stack.push(text(r.take(n)?, &r)?);
            }
            b'q' => {
                let k = r.u8()? as u32;
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or_else(|| r.err("BINPUT on empty stack"))?,
                );
            }
            b'r' => {
                let k = r.u32()?;
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or_else(|| r.err("LONG_BINPUT on empty stack"))?,
                );
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or_else(|| r.err("MEMOIZE on empty stack"))?,
                );
            }
            b'p' => {
                let k: u32 = r.line()?.parse().map_err(|_| r.err("bad PUT index"))?;
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or_else(|| r.err("PUT on empty stack"))?,
                );
            }
            b'h' | b'j' | b'g' => {
                let k = match op {
                    b'h' => r.u8()? as u32,
                    b'j' => r.u32()?,
                    _ => r.line()?.parse().map_err(|_| r.err("bad GET index"))?,
                };
                stack.push(
                    memo.get(&k)
                        .cloned()
                        .ok_or_else(|| r.err(format!("memo {k} unset")))?,
                );
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Value::Global(global(module, name, file)?));
            }
            0x93 => {
                let name = pop!();
                let module = pop!();
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => {
                        stack.push(Value::Global(global(&m, &n, file)?))
                    }
                    _ => return Err(r.err("STACK_GLOBAL needs two strings")),
                }
            }
            b'R' | 0x81 => {
                let args = pop!();
                let callable = pop!();
                let args = match args {
                    Value::Tuple(t) => t,
                    _ => return Err(r.err("REDUCE arguments are not a tuple")),
                };
                push_built!(call(callable, &args, &r)?, []);
            }
            b'b' => {
                let state = pop!();
                let target = stack.last().ok_or_else(|| r.err("BUILD on empty stack"))?;
                build(target, state, &r, &mut containers)?;
            }
            other => return Err(r.err(format!("unsupported opcode 0x{other:02x}"))),
        }
    }
}

fn text(b: &[u8], r: &Reader<'_>) -> Result<Value, ImportError> {
    std::str::from_utf8(b)
        .map(|s| Value::Str(Rc::from(s)))
        .map_err(|_| r.err("string is not UTF-8"))
}

fn pairs(items: Vec<Value>, r: &Reader<'_>) -> Result<Vec<(Value, Value)>, ImportError> {
    if !items.len().is_multiple_of(2) {
        return Err(r.err("odd number of dict items"));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn call(callable: Value, args: &[Value], r: &Reader<'_>) -> Result<Value, ImportError> {
    let g = match callable {
        Value::Global(g) => g,
        _ => return Err(r.err("REDUCE on a non-callable")),
    };
    match g {
        // _reconstruct(ndarray, (0,), b'b'): an empty array awaiting BUILD.
        Global::Reconstruct | Global::NdArray => {
            Ok(Value::Array(Rc::new(RefCell::new(Array::Empty))))
        }
        // dtype('f4', False, True): the kind now, the byte order from BUILD.
        Global::Dtype => {
            let code = match args.first() {
                Some(Value::Str(s)) => s.to_string(),
                Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => return Err(r.err("dtype() without a type code")),
            };
            let dtype = Dtype::parse(&code).map_err(|e| r.err(e))?;
            Ok(Value::Dtype(Rc::new(RefCell::new(dtype))))
        }
        // _codecs.encode(text, 'latin1'): each char is one byte.
        Global::CodecsEncode => match args.first() {
            Some(Value::Str(s)) => {
                let bytes: Option<Vec<u8>> =
                    s.chars().map(|c| u8::try_from(c as u32).ok()).collect();
                bytes
                    .map(|b| Value::Bytes(Rc::from(b)))
                    .ok_or_else(|| r.err("_codecs.encode of non-latin1 text"))
            }
            _ => Err(r.err("_codecs.encode without text")),
        },
    }
}

fn build(
    target: &Value,
    state: Value,
    r: &Reader<'_>,
    containers: &mut Containers,
) -> Result<(), ImportError> {
    match target {
        // dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        Value::Dtype(d) => {
            if let Value::Tuple(t) = &state
                && let Some(order) = t.get(1)
            {
                let order = match order {
                    Value::Str(s) => s.to_string(),
                    Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                d.borrow_mut().set_byte_order(&order);
            }
            Ok(())
        }
        // array state: (version, shape, dtype, is_fortran, raw data or list of objects)
        Value::Array(a) => {
            let t = match state {
                Value::Tuple(t) if t.len() == 5 => t,
                _ => return Err(r.err("array BUILD state is not a 5-tuple")),
            };
            let shape = match &t[1] {
                Value::Tuple(dims) => dims
                    .iter()
                    .map(|d| match d {
                        Value::Int(n) if *n >= 0 => Ok(*n as usize),
                        _ => Err(r.err("array shape is not non-negative integers")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err(r.err("array shape is not a tuple")),
            };
            let dtype = match &t[2] {
                Value::Dtype(d) => d.borrow().clone(),
                _ => return Err(r.err("array dtype is missing")),
            };
            let fortran = matches!(t[3], Value::Bool(true) | Value::Int(1));
            let array = match (&t[4], dtype) {
                (Value::List(items), Dtype::Object) => {
                    containers.store_into(target, items.borrow().iter(), r)?;
                    Array::Object(shape, items.borrow().clone())
                }
                (Value::Bytes(raw), dtype) => {
                    containers.store_into(target, [], r)?;
                    Array::Numeric(decode_array(raw, &dtype, shape, fortran, r.file)?)
                }
                _ => return Err(r.err("array data does not match its dtype")),
            };
            *a.borrow_mut() = array;
            Ok(())
        }
        _ => Err(r.err("BUILD on an object that is neither an array nor a dtype")),
    }
}
