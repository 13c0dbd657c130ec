//! Just enough of Python's pickle to read what `torch.save` writes for a state dict:
//! dicts and `OrderedDict`s of tensors rebuilt by `torch._utils._rebuild_tensor_v2`
//! from storages named by persistent ids. Any other object is kept as an opaque
//! value, never run.

/// A value off the pickle machine's stack.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits, as its little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A class or function named by `module.name`.
    Global(String, String),
    /// A storage named by a persistent id: its key and its type (`FloatStorage`).
    Storage {
        key: String,
        kind: String,
    },
    Tensor(TensorRef),
    /// Anything else: an object built by a callable this reader does not know.
    Opaque(String),
    /// The MARK opcode's place on the stack.
    Mark,
}

/// A tensor as `_rebuild_tensor_v2(storage, offset, size, stride, ...)` describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    pub storage_key: String,
    pub storage_kind: String,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

/// Runs the pickle at the start of `data` to its STOP; returns its value and the
/// number of bytes it took (a legacy torch file is several pickles in a row).
pub(crate) fn load(data: &[u8]) -> Result<(Value, usize), String> {
    let mut machine = Machine {
        data,
        at: 0,
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
    };
    let value = machine.run()?;
    Ok((value, machine.at))
}

struct Machine<'a> {
    data: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    memo: std::collections::HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| format!("the pickle ends early at byte {}", self.at))?;
        let bytes: &'a [u8] = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a pickle line without its end")?;
        let line = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Ok(line)
    }

    fn string(&mut self, len: usize) -> Result<String, String> {
        String::from_utf8(self.take(len)?.to_vec()).map_err(|e| e.to_string())
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "the pickle's stack is empty".into())
    }

    /// Everything above the topmost MARK, which is removed.
    fn pop_to_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self
            .stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or("no MARK on the pickle's stack")?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "the pickle's stack is empty".into())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if items.len() % 2 != 0 {
            return Err("SETITEMS with an odd number of items".into());
        }
        let mut items = items.into_iter();
        let Value::Dict(dict) = self.top()? else {
            return Err("SETITEMS on something that is not a dict".into());
        };
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            dict.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        match self.top()? {
            Value::List(list) => list.extend(items),
            _ => return Err("APPEND on something that is not a list".into()),
        }
        Ok(())
    }

    fn memo_get(&self, index: u32) -> Result<Value, String> {
        self.memo
            .get(&index)
            .cloned()
            .ok_or_else(|| format!("memo entry {index} is missing"))
    }

    fn memo_put(&mut self, index: u32) -> Result<(), String> {
        let top = self.top()?.clone();
        self.memo.insert(index, top);
        Ok(())
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.at;
            let opcode = self.u8()?;
            let value = match opcode {
                b'.' => return self.pop(), // STOP
                0x80 => {
                    self.u8()?; // PROTO n
                    continue;
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint
                    continue;
                }
                b'(' => Value::Mark,
                b'N' => Value::None,
                0x88 => Value::Bool(true),
                0x89 => Value::Bool(false),
                b'J' => Value::Int(i32::from_le_bytes(self.take(4)?.try_into().unwrap()).into()),
                b'K' => Value::Int(self.u8()?.into()),
                b'M' => Value::Int(self.u16()?.into()),
                0x8a => {
                    // LONG1: a little-endian two's-complement integer of n bytes
                    let n = self.u8()? as usize;
                    let bytes = self.take(n)?;
                    if n > 8 {
                        self.stack.push(Value::BigInt(bytes.to_vec()));
                        continue;
                    }
                    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
                    let mut full = [if negative { 0xff } else { 0 }; 8];
                    full[..n].copy_from_slice(bytes);
                    Value::Int(i64::from_le_bytes(full))
                }
                b'G' => Value::Float(f64::from_be_bytes(self.take(8)?.try_into().unwrap())),
                b'X' => {
                    let n = self.u32()? as usize;
                    Value::Str(self.string(n)?)
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    Value::Str(self.string(n)?)
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    Value::Str(self.string(n)?)
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    Value::Str(self.string(n)?)
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    Value::Bytes(self.take(n)?.to_vec())
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    Value::Bytes(self.take(n)?.to_vec())
                }
                b'}' => Value::Dict(Vec::new()),
                b']' => Value::List(Vec::new()),
                b')' => Value::Tuple(Vec::new()),
                b't' => Value::Tuple(self.pop_to_mark()?),
                0x85..=0x87 => {
                    let n = (opcode - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("TUPLE on a short stack".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    Value::Tuple(items)
                }
                b'd' => {
                    let items = self.pop_to_mark()?;
                    self.stack.push(Value::Dict(Vec::new()));
                    self.set_items(items)?;
                    continue;
                }
                b'l' => Value::List(self.pop_to_mark()?),
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                    continue;
                }
                b'u' => {
                    let items = self.pop_to_mark()?;
                    self.set_items(items)?;
                    continue;
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                    continue;
                }
                b'e' => {
                    let items = self.pop_to_mark()?;
                    self.append(items)?;
                    continue;
                }
                b'q' => {
                    let index = self.u8()?.into();
                    self.memo_put(index)?;
                    continue;
                }
                b'r' => {
                    let index = self.u32()?;
                    self.memo_put(index)?;
                    continue;
                }
                0x94 => {
                    let index = self.memo.len() as u32; // MEMOIZE
                    self.memo_put(index)?;
                    continue;
                }
                b'h' => {
                    let index = self.u8()?.into();
                    self.memo_get(index)?
                }
                b'j' => {
                    let index = self.u32()?;
                    self.memo_get(index)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    Value::Global(module, name)
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => Value::Global(module, name),
                        _ => return Err("STACK_GLOBAL without two names".into()),
                    }
                }
                b'R' | 0x81 => {
                    // REDUCE, NEWOBJ: callable(*args)
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    call(callable, args)?
                }
                b'b' => {
                    self.pop()?; // BUILD: an object's state, which nothing here needs
                    continue;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    persistent_load(pid)?
                }
                other => {
                    return Err(format!(
                        "pickle opcode 0x{other:02x} at byte {at} is not one torch.save writes"
                    ))
                }
            };
            self.stack.push(value);
        }
    }
}

/// What torch.save's persistent ids name: `('storage', StorageType, key, location,
/// numel[, view])`.
fn persistent_load(pid: Value) -> Result<Value, String> {
    match pid {
        Value::Tuple(items) if items.len() >= 5 && items[0] == Value::Str("storage".into()) => {
            match (&items[1], &items[2]) {
                (Value::Global(_, kind), Value::Str(key)) => Ok(Value::Storage {
                    key: key.clone(),
                    kind: kind.clone(),
                }),
                _ => Err(format!("a storage id this reader does not know: {items:?}")),
            }
        }
        other => Err(format!(
            "a persistent id this reader does not know: {other:?}"
        )),
    }
}

fn call(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = callable else {
        return Ok(Value::Opaque("a call of a non-global".into()));
    };
    let Value::Tuple(args) = args else {
        return Err(format!("{module}.{name} called without an argument tuple"));
    };
    Ok(match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Value::Dict(Vec::new()),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => rebuild_tensor(&args)?,
        // (tensor, requires_grad, hooks): the tensor is all that matters here
        ("torch._utils", "_rebuild_parameter") => args.into_iter().next().unwrap_or(Value::None),
        _ => Value::Opaque(format!("{module}.{name}")),
    })
}

fn rebuild_tensor(args: &[Value]) -> Result<Value, String> {
    let ints = |value: &Value| -> Option<Vec<i64>> {
        let Value::Tuple(items) = value else {
            return None;
        };
        items
            .iter()
            .map(|v| match v {
                Value::Int(i) => Some(*i),
                _ => None,
            })
            .collect()
    };
    match args {
        [Value::Storage { key, kind }, Value::Int(offset), size, stride, ..] => {
            Ok(Value::Tensor(TensorRef {
                storage_key: key.clone(),
                storage_kind: kind.clone(),
                offset: *offset,
                size: ints(size).ok_or("a tensor size that is not a tuple of ints")?,
                stride: ints(stride).ok_or("a tensor stride that is not a tuple of ints")?,
            }))
        }
        _ => Err("a tensor rebuilt from arguments this reader does not know".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_protocol_2_dict() {
        // pickle.dumps({'a': (1, -2, 300, 2**40), 'b': [1.5, None, True], 'c': 'x'}, protocol=2)
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01(K\x01J\xfe\xff\xff\xffM,\x01\x8a\x06\x00\x00\x00\x00\x00\x01tq\x02X\x01\x00\x00\x00bq\x03]q\x04(G?\xf8\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00cq\x05X\x01\x00\x00\x00xq\x06u.";
        let (value, used) = load(data).unwrap();
        assert_eq!(used, data.len());
        let s = |v: &str| Value::Str(v.into());
        assert_eq!(
            value,
            Value::Dict(vec![
                (
                    s("a"),
                    Value::Tuple(vec![
                        Value::Int(1),
                        Value::Int(-2),
                        Value::Int(300),
                        Value::Int(1 << 40)
                    ])
                ),
                (
                    s("b"),
                    Value::List(vec![Value::Float(1.5), Value::None, Value::Bool(true)])
                ),
                (s("c"), s("x")),
            ])
        );
    }

    #[test]
    fn refuses_a_truncated_pickle() {
        assert!(load(b"\x80\x02}q\x00(X\x01\x00").is_err());
    }
}
