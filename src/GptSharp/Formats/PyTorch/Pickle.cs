using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace GptSharp.Formats.PyTorch;

// The small object model a PyTorch state dict unpickles into. Nothing here is ever "executed":
// a GLOBAL only names one of a few allowed callables, and REDUCE builds the matching object below.

/// <summary>A Python tuple.</summary>
internal sealed record PyTuple(object?[] Items)
{
    public static readonly PyTuple Empty = new([]);
    public int Count => Items.Length;
    public object? this[int i] => Items[i];
}

/// <summary>A Python <c>dict</c> or <c>collections.OrderedDict</c> (insertion order kept either way).</summary>
internal sealed class PyDict(bool ordered)
{
    /// <summary>True for an <c>OrderedDict</c> (state dicts), false for a plain dict.</summary>
    public bool IsOrdered { get; } = ordered;

    public OrderedDictionary<object, object?> Items { get; } = new();

    public object? this[object key] => Items[key];

    public bool TryGet(object key, out object? value) => Items.TryGetValue(key, out value);

    public void Set(object? key, object? value)
    {
        if (key is not (string or long or bool)) throw new InvalidDataException($"dict key of type {PyTypeName(key)} is not supported in a state dict");
        Items[key] = value;
    }

    internal static string PyTypeName(object? o) => o switch
    {
        null => "None", string => "str", long or BigInteger => "int", double => "float", bool => "bool",
        PyTuple => "tuple", List<object?> => "list", PyDict => "dict", TorchTensor => "Tensor", _ => o.GetType().Name,
    };
}

/// <summary>A storage of a torch.save archive: the bytes in record <c>data/&lt;Key&gt;</c>.</summary>
internal sealed record TorchStorage(string Key, TensorDType DType, long ElementCount);

/// <summary>A tensor as <c>torch._utils._rebuild_tensor_v2</c> describes it: a strided view of a storage.</summary>
internal sealed record TorchTensor(TorchStorage Storage, long StorageOffset, int[] Shape, long[] Stride)
{
    /// <summary>The number of elements of the view (its shape's product; the unpickler has checked that it fits a long).</summary>
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (int d in Shape) n = checked(n * d);
            return n;
        }
    }

    /// <summary>
    /// True when two indices of the view reach the same stored element (a stride of 0 from <c>expand</c>, or strides
    /// that interleave): the view then holds more elements than the storage it reads, so loading it would expand memory.
    /// </summary>
    public bool IsSelfOverlapping
    {
        get
        {
            if (ElementCount <= 1) return false;
            // Non-overlapping iff, with dimensions of size > 1 sorted by stride, each stride reaches past the span of the smaller ones.
            var dims = Enumerable.Range(0, Shape.Length).Where(i => Shape[i] > 1).OrderBy(i => Stride[i]).ToArray();
            long span = 1;
            foreach (int i in dims)
            {
                if (Stride[i] < span) return true;
                span = Stride[i] * (Shape[i] - 1) + span;
            }
            return false;
        }
    }

    /// <summary>True for a row-major layout without gaps (dimensions of size 1 may have any stride).</summary>
    public bool IsContiguous
    {
        get
        {
            long expected = 1;
            for (int i = Shape.Length - 1; i >= 0; i--)
            {
                if (Shape[i] != 1 && Stride[i] != expected) return false;
                expected *= Shape[i];
            }
            return true;
        }
    }
}

/// <summary>A GLOBAL that is allowed, kept as a name until REDUCE or a persistent id uses it.</summary>
internal sealed record PyGlobal(string Module, string Name)
{
    public string FullName => Module + "." + Name;
}

/// <summary>
/// A restricted unpickler for the pickles inside torch.save archives (protocol 2, as <c>torch.save</c> writes).
/// It implements only the opcodes a state dict or an optimizer state dict needs and allows only the globals
/// <c>collections.OrderedDict</c>, <c>torch._utils._rebuild_tensor_v2</c> / <c>_rebuild_parameter</c>, the
/// <c>torch.*Storage</c> types and <c>torch</c> dtypes. Anything else fails with the opcode or global named.
/// </summary>
internal sealed class RestrictedUnpickler
{
    private readonly byte[] _data;
    private readonly string _source;
    private int _pos;
    private readonly List<object?> _stack = new();
    private readonly Stack<int> _marks = new();
    private readonly Dictionary<long, object?> _memo = new();

    private RestrictedUnpickler(byte[] data, string source)
    {
        _data = data;
        _source = source;
    }

    /// <summary>Unpickles <paramref name="data"/>; <paramref name="source"/> names the file in errors.</summary>
    public static object? Load(byte[] data, string source) => new RestrictedUnpickler(data, source).Run();

    internal static readonly Dictionary<string, TensorDType> StorageTypes = new()
    {
        ["FloatStorage"] = TensorDType.F32, ["DoubleStorage"] = TensorDType.F64, ["HalfStorage"] = TensorDType.F16,
        ["BFloat16Storage"] = TensorDType.BF16, ["LongStorage"] = TensorDType.I64, ["IntStorage"] = TensorDType.I32,
        ["ShortStorage"] = TensorDType.I16, ["CharStorage"] = TensorDType.I8, ["ByteStorage"] = TensorDType.U8,
        ["BoolStorage"] = TensorDType.Bool,
    };

    private static readonly HashSet<string> DTypeNames =
        ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool", "float", "double", "half", "long", "int"];

    private object? Run()
    {
        while (true)
        {
            if (_pos >= _data.Length) throw Corrupt("pickle ends without STOP");
            int opPos = _pos;
            byte op = _data[_pos++];
            switch (op)
            {
                case 0x80: // PROTO
                    if (ReadByte() > 5) throw Corrupt($"unsupported pickle protocol {_data[_pos - 1]}");
                    break;
                case (byte)'.': // STOP
                    if (_stack.Count != 1 || _marks.Count != 0) throw Corrupt("STOP with an unbalanced stack");
                    return _stack[0];
                case (byte)'c': // GLOBAL
                    Push(Global(ReadLine(), ReadLine()));
                    break;
                case (byte)'q': Memo(ReadByte()); break;              // BINPUT
                case (byte)'r': Memo(ReadUInt32()); break;            // LONG_BINPUT
                case (byte)'h': Push(Recall(ReadByte())); break;      // BINGET
                case (byte)'j': Push(Recall(ReadUInt32())); break;    // LONG_BINGET
                case (byte)'(': _marks.Push(_stack.Count); break;     // MARK
                case (byte)'t': Push(new PyTuple(PopMark())); break;  // TUPLE
                case (byte)')': Push(PyTuple.Empty); break;           // EMPTY_TUPLE
                case 0x85: Push(new PyTuple([Pop()])); break;          // TUPLE1
                case 0x86: { var b = Pop(); var a = Pop(); Push(new PyTuple([a, b])); break; } // TUPLE2
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new PyTuple([a, b, c])); break; } // TUPLE3
                case (byte)'X': // BINUNICODE
                {
                    long n = ReadUInt32();
                    Push(Encoding.UTF8.GetString(Take(n)));
                    break;
                }
                case 0x8c: // SHORT_BINUNICODE (protocol 4)
                    Push(Encoding.UTF8.GetString(Take(ReadByte())));
                    break;
                case (byte)'K': Push((long)ReadByte()); break;                                   // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break; // BININT2
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break;  // BININT
                case 0x8a: // LONG1: little-endian two's complement of n bytes
                {
                    var bytes = Take(ReadByte());
                    var value = new BigInteger(bytes, isUnsigned: false, isBigEndian: false);
                    if (value < long.MinValue || value > long.MaxValue) throw Corrupt("integer does not fit in 64 bits");
                    Push((long)value);
                    break;
                }
                case 0x88: Push(true); break;   // NEWTRUE
                case 0x89: Push(false); break;  // NEWFALSE
                case (byte)'N': Push(null); break; // NONE
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break; // BINFLOAT (big-endian)
                case (byte)'}': Push(new PyDict(ordered: false)); break; // EMPTY_DICT
                case (byte)']': Push(new List<object?>()); break;         // EMPTY_LIST
                case (byte)'s': // SETITEM
                {
                    var value = Pop();
                    var key = Pop();
                    Dict(Peek(), "SETITEM").Set(key, value);
                    break;
                }
                case (byte)'u': // SETITEMS
                {
                    var items = PopMark();
                    if (items.Length % 2 != 0) throw Corrupt("SETITEMS with an odd number of items");
                    var dict = Dict(Peek(), "SETITEMS");
                    for (int i = 0; i < items.Length; i += 2) dict.Set(items[i], items[i + 1]);
                    break;
                }
                case (byte)'a': // APPEND
                {
                    var item = Pop();
                    List(Peek(), "APPEND").Add(item);
                    break;
                }
                case (byte)'e': // APPENDS
                {
                    var items = PopMark();
                    List(Peek(), "APPENDS").AddRange(items);
                    break;
                }
                case (byte)'R': // REDUCE
                {
                    var args = Pop() as PyTuple ?? throw Corrupt("REDUCE arguments are not a tuple");
                    var callable = Pop() as PyGlobal ?? throw Corrupt("REDUCE on something that is not an allowed global");
                    Push(Reduce(callable, args));
                    break;
                }
                case (byte)'b': // BUILD: only the OrderedDict's attributes (a state dict's _metadata), which we don't need
                {
                    Pop();
                    if (Peek() is not PyDict { IsOrdered: true })
                        throw Corrupt($"BUILD on a {PyDict.PyTypeName(Peek())} is not allowed (only on an OrderedDict)");
                    break;
                }
                case (byte)'Q': // BINPERSID
                    Push(PersistentLoad(Pop()));
                    break;
                default:
                    throw Corrupt($"opcode 0x{op:x2} ('{(op >= 32 && op < 127 ? (char)op : '?')}') at byte {opPos} is not allowed in a state dict");
            }
        }
    }

    private object Global(string module, string name)
    {
        string full = module + "." + name;
        bool allowed = full is "collections.OrderedDict" or "torch._utils._rebuild_tensor_v2" or "torch._utils._rebuild_parameter"
            || (module == "torch" && (StorageTypes.ContainsKey(name) || DTypeNames.Contains(name)));
        if (!allowed) throw Corrupt($"global '{full}' is not allowed (a state dict needs only OrderedDict, tensors and storages)");
        return new PyGlobal(module, name);
    }

    private object? Reduce(PyGlobal callable, PyTuple args)
    {
        switch (callable.FullName)
        {
            case "collections.OrderedDict":
                if (args.Count != 0) throw Corrupt("OrderedDict(...) with arguments is not supported");
                return new PyDict(ordered: true);
            case "torch._utils._rebuild_tensor_v2":
            {
                // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                if (args.Count is < 6 or > 7) throw Corrupt($"_rebuild_tensor_v2 with {args.Count} arguments");
                var storage = args[0] as TorchStorage ?? throw Corrupt("_rebuild_tensor_v2: first argument is not a storage");
                long offset = args[1] as long? ?? throw Corrupt("_rebuild_tensor_v2: storage offset is not an int");
                var shape = Ints(args[2], "size").Select(s => s is >= 0 and <= int.MaxValue ? (int)s : throw Corrupt($"dimension {s} out of range")).ToArray();
                var stride = Ints(args[3], "stride");
                if (stride.Length != shape.Length) throw Corrupt("_rebuild_tensor_v2: size and stride differ in length");
                var tensor = new TorchTensor(storage, offset, shape, stride);
                CheckExtent(tensor);
                return tensor;
            }
            case "torch._utils._rebuild_parameter":
                // (data, requires_grad, backward_hooks): a Parameter is its tensor for our purposes.
                if (args.Count < 1 || args[0] is not TorchTensor t) throw Corrupt("_rebuild_parameter without a tensor");
                return t;
            default:
                throw Corrupt($"calling '{callable.FullName}' is not allowed");
        }
    }

    /// <summary>('storage', torch.FloatStorage, key, location, numel) → the storage record.</summary>
    private TorchStorage PersistentLoad(object? pid)
    {
        if (pid is not PyTuple { Count: 5 } t || t[0] is not "storage")
            throw Corrupt("persistent id is not a ('storage', type, key, location, size) tuple");
        if (t[1] is not PyGlobal { Module: "torch" } type || !StorageTypes.TryGetValue(type.Name, out var dtype))
            throw Corrupt("persistent id does not name a torch storage type");
        if (t[2] is not string key || key.Length == 0 || key.Contains('/') || key.Contains(".."))
            throw Corrupt("storage key is not a plain name");
        long count = t[4] as long? ?? throw Corrupt("storage size is not an int");
        // A storage of 2^60 elements would overflow its byte count; none can exist in a file anyway.
        if (count < 0 || count > long.MaxValue / 8) throw Corrupt($"storage size {count} is out of range");
        return new TorchStorage(key, dtype, count);
    }

    private void CheckExtent(TorchTensor t)
    {
        if (t.StorageOffset < 0) throw Corrupt("negative storage offset");
        long count = 1, last = t.StorageOffset;
        try
        {
            foreach (int d in t.Shape) count = checked(count * d);
            if (count == 0) return;
            for (int i = 0; i < t.Shape.Length; i++)
            {
                if (t.Stride[i] < 0) throw Corrupt("negative strides are not supported");
                last = checked(last + (t.Shape[i] - 1) * t.Stride[i]);
            }
        }
        catch (OverflowException)
        {
            throw Corrupt($"tensor [{string.Join(", ", t.Shape)}] with strides [{string.Join(", ", t.Stride)}] overflows a 64-bit element index");
        }
        if (last >= t.Storage.ElementCount)
            throw Corrupt($"tensor [{string.Join(", ", t.Shape)}] at offset {t.StorageOffset} reaches element {last} of a {t.Storage.ElementCount}-element storage '{t.Storage.Key}'");
    }

    private long[] Ints(object? o, string what) => o is PyTuple t
        ? t.Items.Select(x => x as long? ?? throw Corrupt($"_rebuild_tensor_v2: {what} holds a non-int")).ToArray()
        : throw Corrupt($"_rebuild_tensor_v2: {what} is not a tuple");

    private PyDict Dict(object? o, string op) => o as PyDict ?? throw Corrupt($"{op} on a {PyDict.PyTypeName(o)}, not a dict");

    private List<object?> List(object? o, string op) => o as List<object?> ?? throw Corrupt($"{op} on a {PyDict.PyTypeName(o)}, not a list");

    private void Memo(long index)
    {
        if (_stack.Count == 0) throw Corrupt("memo PUT on an empty stack");
        _memo[index] = _stack[^1];
    }

    private object? Recall(long index) => _memo.TryGetValue(index, out var o) ? o : throw Corrupt($"memo GET of unknown index {index}");

    private void Push(object? o) => _stack.Add(o);

    private object? Peek() => _stack.Count > (_marks.Count > 0 ? _marks.Peek() : 0) ? _stack[^1] : throw Corrupt("stack underflow");

    private object? Pop()
    {
        var o = Peek();
        _stack.RemoveAt(_stack.Count - 1);
        return o;
    }

    private object?[] PopMark()
    {
        if (_marks.Count == 0) throw Corrupt("no MARK on the stack");
        int start = _marks.Pop();
        var items = _stack.GetRange(start, _stack.Count - start).ToArray();
        _stack.RemoveRange(start, _stack.Count - start);
        return items;
    }

    private byte ReadByte() => _pos < _data.Length ? _data[_pos++] : throw Corrupt("pickle truncated");

    private uint ReadUInt32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));

    private ReadOnlySpan<byte> Take(long n)
    {
        if (n < 0 || _pos + n > _data.Length) throw Corrupt("pickle truncated");
        var span = _data.AsSpan(_pos, (int)n);
        _pos += (int)n;
        return span;
    }

    private string ReadLine()
    {
        int end = Array.IndexOf(_data, (byte)'\n', _pos);
        if (end < 0) throw Corrupt("pickle truncated in GLOBAL");
        string s = Encoding.UTF8.GetString(_data, _pos, end - _pos);
        _pos = end + 1;
        return s;
    }

    private InvalidDataException Corrupt(string what) => new($"{_source}: refusing to unpickle: {what}.");
}

/// <summary>
/// Writes the pickle of a state dict (protocol 2, the opcodes <c>torch.save</c> uses) from <see cref="PyDict"/>,
/// lists, <see cref="PyTuple"/>, strings, ints, floats, bools, None and <see cref="Tensors.Tensor"/>s.
/// Each tensor becomes a <c>_rebuild_tensor_v2</c> over its own float32 storage, keyed by <paramref name="storageKey"/>.
/// </summary>
internal sealed class Pickler(Stream output, Func<Tensors.Tensor, string> storageKey)
{
    public void Dump(object? root)
    {
        output.Write([0x80, 2]);
        Write(root);
        output.WriteByte((byte)'.');
    }

    private void Write(object? o)
    {
        switch (o)
        {
            case null: output.WriteByte((byte)'N'); break;
            case bool b: output.WriteByte(b ? (byte)0x88 : (byte)0x89); break;
            case int i: WriteInt(i); break;
            case long l: WriteInt(l); break;
            case float f: WriteFloat(double.Parse(f.ToString("R", System.Globalization.CultureInfo.InvariantCulture), System.Globalization.CultureInfo.InvariantCulture)); break;
            case double d: WriteFloat(d); break;
            case string s: WriteString(s); break;
            case PyTuple t: WriteTuple(t.Items); break;
            case List<object?> list:
                output.WriteByte((byte)']');
                if (list.Count > 0)
                {
                    output.WriteByte((byte)'(');
                    foreach (var item in list) Write(item);
                    output.WriteByte((byte)'e');
                }
                break;
            case PyDict dict:
                if (dict.IsOrdered) WriteOrderedDictCall();
                else output.WriteByte((byte)'}');
                if (dict.Items.Count > 0)
                {
                    output.WriteByte((byte)'(');
                    foreach (var (k, v) in dict.Items)
                    {
                        Write(k);
                        Write(v);
                    }
                    output.WriteByte((byte)'u');
                }
                break;
            case Tensors.Tensor t: WriteTensor(t); break;
            default: throw new ArgumentException($"cannot pickle a {o.GetType().Name}");
        }
    }

    private void WriteTensor(Tensors.Tensor t)
    {
        WriteGlobal("torch._utils", "_rebuild_tensor_v2");
        output.WriteByte((byte)'(');
        // persistent id ('storage', torch.FloatStorage, key, 'cpu', numel)
        output.WriteByte((byte)'(');
        WriteString("storage");
        WriteGlobal("torch", "FloatStorage");
        WriteString(storageKey(t));
        WriteString("cpu");
        WriteInt(t.Length);
        output.WriteByte((byte)'t');
        output.WriteByte((byte)'Q');
        WriteInt(0); // storage offset
        var shape = t.ShapeArray;
        var stride = new object?[shape.Length];
        long s = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            stride[i] = s;
            s *= shape[i];
        }
        WriteTuple(shape.Select(d => (object?)(long)d).ToArray());
        WriteTuple(stride);
        output.WriteByte(0x89); // requires_grad False
        WriteOrderedDictCall();  // backward_hooks = OrderedDict()
        output.WriteByte((byte)'t');
        output.WriteByte((byte)'R');
    }

    private void WriteOrderedDictCall()
    {
        WriteGlobal("collections", "OrderedDict");
        output.WriteByte((byte)')');
        output.WriteByte((byte)'R');
    }

    private void WriteTuple(object?[] items)
    {
        switch (items.Length)
        {
            case 0: output.WriteByte((byte)')'); return;
            case 1: Write(items[0]); output.WriteByte(0x85); return;
            case 2: Write(items[0]); Write(items[1]); output.WriteByte(0x86); return;
            case 3: Write(items[0]); Write(items[1]); Write(items[2]); output.WriteByte(0x87); return;
        }
        output.WriteByte((byte)'(');
        foreach (var item in items) Write(item);
        output.WriteByte((byte)'t');
    }

    private void WriteGlobal(string module, string name)
    {
        output.WriteByte((byte)'c');
        output.Write(Encoding.UTF8.GetBytes(module + "\n" + name + "\n"));
    }

    private void WriteInt(long v)
    {
        Span<byte> b = stackalloc byte[9];
        if (v is >= 0 and < 256) { output.WriteByte((byte)'K'); output.WriteByte((byte)v); }
        else if (v is >= 0 and < 65536) { output.WriteByte((byte)'M'); BinaryPrimitives.WriteUInt16LittleEndian(b, (ushort)v); output.Write(b[..2]); }
        else if (v is >= int.MinValue and <= int.MaxValue) { output.WriteByte((byte)'J'); BinaryPrimitives.WriteInt32LittleEndian(b, (int)v); output.Write(b[..4]); }
        else { output.WriteByte(0x8a); output.WriteByte(8); BinaryPrimitives.WriteInt64LittleEndian(b, v); output.Write(b[..8]); }
    }

    private void WriteFloat(double d)
    {
        Span<byte> b = stackalloc byte[8];
        output.WriteByte((byte)'G');
        BinaryPrimitives.WriteDoubleBigEndian(b, d);
        output.Write(b);
    }

    private void WriteString(string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        Span<byte> len = stackalloc byte[4];
        output.WriteByte((byte)'X');
        BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)bytes.Length);
        output.Write(len);
        output.Write(bytes);
    }
}
