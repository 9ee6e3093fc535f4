using System.Buffers.Binary;
using System.Text.Json;

namespace GptSharp.Tests.Model;

/// <summary>
/// A minimal safetensors reader for the test fixtures (F32 and I64 only): 8-byte little-endian header
/// length, JSON header, then the raw little-endian data. The library's real reader lives in Checkpoints.
/// </summary>
internal sealed class TestSafetensors
{
    private readonly Dictionary<string, (string DType, int[] Shape, long Begin, long End)> _entries = new();
    private readonly byte[] _bytes;
    private readonly long _dataStart;

    public TestSafetensors(string path)
    {
        _bytes = File.ReadAllBytes(path);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(_bytes);
        _dataStart = 8 + headerLength;
        using var doc = JsonDocument.Parse(_bytes.AsMemory(8, (int)headerLength));
        foreach (var property in doc.RootElement.EnumerateObject())
        {
            if (property.Name == "__metadata__") continue;
            var e = property.Value;
            var offsets = e.GetProperty("data_offsets");
            _entries[property.Name] = (e.GetProperty("dtype").GetString()!,
                e.GetProperty("shape").EnumerateArray().Select(x => x.GetInt32()).ToArray(),
                offsets[0].GetInt64(), offsets[1].GetInt64());
        }
    }

    public IEnumerable<string> Names => _entries.Keys;

    public int[] Shape(string name) => _entries[name].Shape;

    public float[] Floats(string name)
    {
        var e = _entries[name];
        Assert.Equal("F32", e.DType);
        var span = _bytes.AsSpan((int)(_dataStart + e.Begin), (int)(e.End - e.Begin));
        var result = new float[span.Length / 4];
        for (int i = 0; i < result.Length; i++) result[i] = BinaryPrimitives.ReadSingleLittleEndian(span[(4 * i)..]);
        return result;
    }

    public int[] Ints(string name)
    {
        var e = _entries[name];
        Assert.Equal("I64", e.DType);
        var span = _bytes.AsSpan((int)(_dataStart + e.Begin), (int)(e.End - e.Begin));
        var result = new int[span.Length / 8];
        for (int i = 0; i < result.Length; i++) result[i] = checked((int)BinaryPrimitives.ReadInt64LittleEndian(span[(8 * i)..]));
        return result;
    }
}
