using System.Buffers.Binary;
using System.Runtime.InteropServices;
using GptSharp.Tensors;
using GptSharp.IO;
using static GptSharp.Tests.Checkpoints.CheckpointTestHelpers;
using GptSharp.Formats;
using GptSharp.Formats.SafeTensors;

namespace GptSharp.Tests.Checkpoints;

public class SafeTensorsTests
{
    [Fact]
    public void RoundTripKeepsNamesShapesDtypesValuesAndMetadata()
    {
        using var dir = new TempDir();
        using var a = Tensor.FromArray([1f, -2.5f, 3e-8f, float.MaxValue, 0f, -0f], 2, 3);
        using var scalar = Tensor.FromArray([42f]);
        string path = dir.File("t.safetensors");
        SafeTensorsWriter.Write(path,
            [SafeTensorsEntry.Float32("a", a), SafeTensorsEntry.Float32("s", scalar), SafeTensorsEntry.Int64("ids", [1, -2, long.MaxValue], 3)],
            new Dictionary<string, string> { ["format"] = "pt", ["note"] = "{\"quoted\": \"ünïcode\"}" });

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal("pt", file.Metadata["format"]);
        Assert.Equal("{\"quoted\": \"ünïcode\"}", file.Metadata["note"]);
        Assert.Equal([2, 3], file.Find("a")!.Shape);
        Assert.Empty(file.Find("s")!.Shape);
        Assert.Equal(TensorDType.I64, file.Find("ids")!.DType);
        Assert.Equal(a.ToArray(), file.ReadFloats("a"));
        Assert.Equal([42f], file.ReadFloats("s"));
        Assert.Equal([1L, -2L, long.MaxValue], file.ReadInt64("ids"));
        // Header padded to 8 bytes, so the data (and the I64 tensor written first) is aligned.
        Assert.Equal(0, (new FileInfo(path).Length - 8 * 3 - 4 * 7) % 8);
    }

    [Fact]
    public void ReadsReferenceFixtureWithInt64AndFloat32()
    {
        using var file = SafeTensorsFile.Open(FixturePaths.Get("reference", "tiny-qkvbias", "io.safetensors"));
        Assert.Equal(TensorDType.I64, file.Find("inputs")!.DType);
        Assert.Equal([3, 20], file.Find("inputs")!.Shape);
        var inputs = file.ReadInt64("inputs");
        var targets = file.ReadInt64("targets");
        Assert.All(inputs, id => Assert.InRange(id, 0, 999));
        // targets[b, t] is the token after inputs[b, t]: rows are shifted by one.
        for (int b = 0; b < 3; b++)
            for (int t = 0; t < 19; t++)
                Assert.Equal(inputs[b * 20 + t + 1], targets[b * 20 + t]);
        Assert.Equal([3, 20, 1000], file.Find("logits")!.Shape);
        Assert.Equal(8.295676f, file.ReadFloats("loss")[0], 5);
    }

    [Fact]
    public void ReadsUnalignedHeaderFixture()
    {
        // The HF-style fixture's header is 2411 bytes: data starts at an odd offset.
        using var file = SafeTensorsFile.Open(FixturePaths.Get("pth", "tiny_gpt2_hf.safetensors"));
        var wte = file.ReadFloats("wte.weight");
        Assert.Equal([0.3373701870441437f, -0.1777772158384323f, -0.3035275936126709f], wte[..3]);
        Assert.Equal([1, 1, 16, 16], file.Find("h.0.attn.bias")!.Shape);
    }

    [Fact]
    public void ConvertsF16BF16F64AndIntegersToFloat()
    {
        using var dir = new TempDir();
        string path = dir.File("mixed.safetensors");
        var data = new List<byte>();
        void Add(ReadOnlySpan<byte> b) => data.AddRange(b.ToArray());
        Span<byte> tmp = stackalloc byte[8];
        foreach (double d in new[] { 1.5, -1e-3 }) { BinaryPrimitives.WriteDoubleLittleEndian(tmp, d); Add(tmp[..8]); }   // F64 [0,16)
        foreach (long l in new[] { 7L, -9L }) { BinaryPrimitives.WriteInt64LittleEndian(tmp, l); Add(tmp[..8]); }        // I64 [16,32)
        foreach (float f in new[] { 0.5f, -2f }) { BinaryPrimitives.WriteHalfLittleEndian(tmp, (Half)f); Add(tmp[..2]); } // F16 [32,36)
        foreach (float f in new[] { 3.140625f, -0.1875f }) { BinaryPrimitives.WriteUInt16LittleEndian(tmp, (ushort)(BitConverter.SingleToInt32Bits(f) >> 16)); Add(tmp[..2]); } // BF16 [36,40)
        WriteRaw(path, """{"d":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"l":{"dtype":"I64","shape":[2],"data_offsets":[16,32]},"h":{"dtype":"F16","shape":[2],"data_offsets":[32,36]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[36,40]}}""", data.ToArray());
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal([1.5f, -1e-3f], file.ReadFloats("d"));
        Assert.Equal([7f, -9f], file.ReadFloats("l"));
        Assert.Equal([0.5f, -2f], file.ReadFloats("h"));
        Assert.Equal([3.140625f, -0.1875f], file.ReadFloats("b"));
        Assert.Equal([7L, -9L], file.ReadInt64("l"));
    }

    public static TheoryData<string, string, int, long?, string> CorruptHeaders => new()
    {
        { "bad JSON", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]""", 8, null, "not valid JSON" },
        { "header past end", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, 1_000_000, "runs past the end" },
        { "header over limit", """{}""", 0, 200_000_000, "limit" },
        { "offsets out of range", """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8, null, "truncated" },
        { "overlap", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12, null, "overlaps" },
        { "gap", """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12, null, "gap" },
        { "size mismatch", """{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8, null, "needs 12 bytes" },
        { "unknown dtype", """{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}""", 8, null, "unknown dtype" },
        { "negative dim", """{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", 8, null, "invalid shape" },
        { "reversed offsets", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}""", 8, null, "invalid data_offsets" },
        { "trailing bytes", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 12, null, "describes 8 data bytes" },
        { "duplicate", """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, null, "appears twice" },
    };

    [Theory]
    [MemberData(nameof(CorruptHeaders))]
    public void CorruptFilesFailWithOneClearMessage(string what, string header, int dataBytes, long? declaredLength, string expected)
    {
        using var dir = new TempDir();
        string path = dir.File("corrupt.safetensors");
        WriteRaw(path, header, new byte[dataBytes], declaredLength);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("\n", e.Message);
        _ = what;
    }

    [Fact]
    public void TruncatedFileIsRejected()
    {
        using var dir = new TempDir();
        string path = dir.File("cut.safetensors");
        var bytes = File.ReadAllBytes(FixturePaths.Get("reference", "tiny-qkvbias", "weights.safetensors"));
        File.WriteAllBytes(path, bytes[..^100]);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains("truncated", e.Message);
        File.WriteAllBytes(path, bytes[..5]);
        Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(path).Dispose());
    }

    [Fact]
    public void FailedWriteLeavesThePreviousFileIntact()
    {
        using var dir = new TempDir();
        string path = dir.File("model.safetensors");
        using var first = Tensor.FromArray([1f, 2f, 3f, 4f], 4);
        SafeTensorsWriter.Write(path, [SafeTensorsEntry.Float32("w", first)]);
        var before = File.ReadAllBytes(path);

        using var big = new Tensor(1000);
        big.Span.Fill(9f);
        AtomicFile.WrapStreamForTests.Value = s => new FailingStream(s, 1500);
        try
        {
            Assert.Throws<IOException>(() => SafeTensorsWriter.Write(path, [SafeTensorsEntry.Float32("w", big)]));
        }
        finally
        {
            AtomicFile.WrapStreamForTests.Value = null;
        }
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFiles(dir.Path)); // no temp file left behind
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal([1f, 2f, 3f, 4f], file.ReadFloats("w"));
    }

    [Fact]
    public unsafe void ReadIntoWritesStraightIntoTheTensorBuffer()
    {
        using var dir = new TempDir();
        string path = dir.File("x.safetensors");
        using var src = Tensor.FromArray(Enumerable.Range(0, 100).Select(i => i * 0.5f).ToArray(), 10, 10);
        SafeTensorsWriter.Write(path, [SafeTensorsEntry.Float32("x", src)]);
        using var dst = new Tensor(10, 10);
        using var file = SafeTensorsFile.Open(path);
        file.ReadInto("x", dst.Span);
        Assert.Equal(src.ToArray(), dst.ToArray());
        var e = Assert.Throws<ArgumentException>(() => file.ReadInto("x", new float[99]));
        Assert.Contains("'x'", e.Message);
    }
}
