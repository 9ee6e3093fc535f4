using System.Buffers.Binary;
using System.Text.Json;
using GptSharp.Model;

namespace GptSharp.Tests.Generation;

/// <summary>
/// One PyTorch reference fixture (tests/GptSharp.Tests/Fixtures/reference/NAME): its config, its weights loaded
/// into a <see cref="GptModel"/> by the book's names, and the tensors of io.safetensors.
/// A minimal safetensors reader (F32 and I64) so the generation tests do not depend on the checkpoint code.
/// </summary>
internal sealed class ReferenceFixture
{
    private readonly Dictionary<string, (string Dtype, int[] Shape, byte[] Data)> _io;

    private ReferenceFixture(string name)
    {
        Name = name;
        using var config = JsonDocument.Parse(File.ReadAllText(FixturePaths.Get("reference", name, "config.json")));
        var c = config.RootElement;
        Config = new GptConfig
        {
            VocabSize = c.GetProperty("vocab_size").GetInt32(),
            ContextLength = c.GetProperty("context_length").GetInt32(),
            EmbeddingDim = c.GetProperty("emb_dim").GetInt32(),
            Heads = c.GetProperty("n_heads").GetInt32(),
            Layers = c.GetProperty("n_layers").GetInt32(),
            DropRate = (float)c.GetProperty("drop_rate").GetDouble(),
            QkvBias = c.GetProperty("qkv_bias").GetBoolean(),
        };
        _io = Read(FixturePaths.Get("reference", name, "io.safetensors"));
    }

    public static ReferenceFixture Load(string name) => new(name);

    public string Name { get; }

    public GptConfig Config { get; }

    /// <summary>A model holding the fixture's weights (caller disposes).</summary>
    public GptModel CreateModel()
    {
        var model = new GptModel(Config);
        var state = model.StateDict();
        var weights = Read(FixturePaths.Get("reference", Name, "weights.safetensors"));
        foreach (var (name, tensor) in state)
        {
            var (dtype, shape, data) = weights[name];
            Assert.Equal("F32", dtype);
            Assert.Equal(tensor.ShapeArray, shape);
            data.AsSpan().CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsBytes(tensor.Span));
        }
        return model;
    }

    public int[] Shape(string name) => _io[name].Shape;

    public float[] Floats(string name)
    {
        var (dtype, _, data) = _io[name];
        Assert.Equal("F32", dtype);
        return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(data).ToArray();
    }

    public int[] Ints(string name)
    {
        var (dtype, _, data) = _io[name];
        Assert.Equal("I64", dtype);
        var longs = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, long>(data);
        var ints = new int[longs.Length];
        for (int i = 0; i < ints.Length; i++) ints[i] = checked((int)longs[i]);
        return ints;
    }

    private static Dictionary<string, (string, int[], byte[])> Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(bytes);
        using var header = JsonDocument.Parse(bytes.AsMemory(8, (int)headerLength));
        var result = new Dictionary<string, (string, int[], byte[])>();
        foreach (var entry in header.RootElement.EnumerateObject())
        {
            if (entry.Name == "__metadata__") continue;
            var offsets = entry.Value.GetProperty("data_offsets");
            int begin = (int)(8 + headerLength + offsets[0].GetInt64()), end = (int)(8 + headerLength + offsets[1].GetInt64());
            result[entry.Name] = (entry.Value.GetProperty("dtype").GetString()!,
                entry.Value.GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()).ToArray(),
                bytes[begin..end]);
        }
        return result;
    }
}
