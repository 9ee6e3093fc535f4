using System.Runtime.InteropServices;
using Google.Protobuf;
using GptSharp.Formats.Onnx.Proto;

namespace GptSharp.Formats.Onnx;

/// <summary>
/// Builds one ONNX graph of standard-domain nodes (the generated <see cref="GraphProto"/> messages, serialized by
/// Google.Protobuf). Float initializers go inline, or, when an external data stream is given, into that file with
/// <c>location/offset/length</c> entries (the IR's external data, needed past protobuf's 2 GB message limit).
/// </summary>
internal sealed class OnnxGraphBuilder(string graphName, Stream? externalData = null, string? externalDataName = null)
{
    /// <summary>External tensors start at multiples of this, so a reader may map them straight into aligned memory.</summary>
    private const int ExternalAlignment = 64;

    private readonly GraphProto _graph = new() { Name = graphName };
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private int _next;
    private long _externalOffset;

    public GraphProto Graph => _graph;

    /// <summary>A fresh value name: <paramref name="hint"/> plus a counter.</summary>
    public string Fresh(string hint) => $"{hint}_{_next++}";

    /// <summary>Adds a node with one output (named <paramref name="output"/>, or a fresh name) and returns that name.</summary>
    public string Node(string op, string[] inputs, string? output = null, params AttributeProto[] attributes) =>
        Nodes(op, inputs, [output ?? Fresh(op)], attributes)[0];

    /// <summary>Adds a node with several outputs.</summary>
    public string[] Nodes(string op, string[] inputs, string[] outputs, params AttributeProto[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = Fresh(op + "_node") };
        node.Input.AddRange(inputs);
        node.Output.AddRange(outputs);
        node.Attribute.AddRange(attributes);
        _graph.Node.Add(node);
        return outputs;
    }

    public static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static AttributeProto Float(string name, float value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    public static AttributeProto Ints(string name, params long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    /// <summary>A float32 initializer of shape <paramref name="dims"/> (external when the builder has an external stream).</summary>
    public string Floats(string name, ReadOnlySpan<int> dims, ReadOnlySpan<float> values) => Floats(name, dims, values, null);

    /// <summary>
    /// A float32 initializer whose little-endian bytes the caller built in <paramref name="owned"/> and hands over: held
    /// by the message as they are, without the copy <see cref="ByteString.CopyFrom(ReadOnlySpan{byte})"/> makes.
    /// </summary>
    public string Floats(string name, ReadOnlySpan<int> dims, byte[] owned) => Floats(name, dims, MemoryMarshal.Cast<byte, float>(owned), owned);

    private string Floats(string name, ReadOnlySpan<int> dims, ReadOnlySpan<float> values, byte[]? owned)
    {
        var tensor = NewTensor(name, TensorProto.Types.DataType.Float, dims);
        var bytes = MemoryMarshal.AsBytes(values);
        if (externalData is null) tensor.RawData = owned is not null ? UnsafeByteOperations.UnsafeWrap(owned) : ByteString.CopyFrom(bytes);
        else
        {
            long padding = (ExternalAlignment - _externalOffset % ExternalAlignment) % ExternalAlignment;
            externalData.Write(new byte[padding]);
            _externalOffset += padding;
            externalData.Write(bytes);
            tensor.DataLocation = TensorProto.Types.DataLocation.External;
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = externalDataName });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = _externalOffset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = bytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
            _externalOffset += bytes.Length;
        }
        _graph.Initializer.Add(tensor);
        return name;
    }

    /// <summary>A float32 scalar constant (always inline).</summary>
    public string Scalar(float value)
    {
        var tensor = NewTensor(Fresh("const_f"), TensorProto.Types.DataType.Float, []);
        tensor.FloatData.Add(value);
        _graph.Initializer.Add(tensor);
        return tensor.Name;
    }

    /// <summary>An int64 constant: a scalar when <paramref name="scalar"/>, else a 1-D tensor of the values (always inline).</summary>
    public string Int64s(bool scalar, params long[] values)
    {
        var tensor = NewTensor(Fresh("const_i"), TensorProto.Types.DataType.Int64, scalar ? [] : [values.Length]);
        tensor.Int64Data.AddRange(values);
        _graph.Initializer.Add(tensor);
        return tensor.Name;
    }

    /// <summary>A graph input; each dimension is a fixed size (int) or a symbolic name (string).</summary>
    public string Input(string name, TensorProto.Types.DataType type, params object[] dims)
    {
        _graph.Input.Add(ValueInfo(name, type, dims));
        return name;
    }

    /// <summary>Declares <paramref name="name"/> (already produced by a node) a graph output.</summary>
    public void Output(string name, TensorProto.Types.DataType type, params object[] dims) => _graph.Output.Add(ValueInfo(name, type, dims));

    private TensorProto NewTensor(string name, TensorProto.Types.DataType type, ReadOnlySpan<int> dims)
    {
        if (!_names.Add(name)) throw new InvalidOperationException($"ONNX initializer '{name}' is defined twice.");
        var tensor = new TensorProto { Name = name, DataType = (int)type };
        foreach (int d in dims) tensor.Dims.Add(d);
        return tensor;
    }

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(d switch
            {
                int n => new TensorShapeProto.Types.Dimension { DimValue = n },
                string s => new TensorShapeProto.Types.Dimension { DimParam = s },
                _ => throw new ArgumentException($"dimension {d} of '{name}' is neither a size nor a name."),
            });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
    }
}
