using System.Buffers.Binary;
using System.Text;
using GptSharp.Checkpoints;
using GptSharp.Cli.Commands;
using GptSharp.Formats.Gguf;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tests.Model;
using GptSharp.Tokenization;
using GptSharp.Data;

namespace GptSharp.Tests.Checkpoints;

/// <summary>
/// GGUF written and read by GptSharp alone (llama.cpp reading our files, and GptSharp reading llama.cpp's, is
/// <see cref="Interop.LlamaCppTests"/>): exact round trips, the layout llama.cpp expects, the quantized types, hostile headers.
/// </summary>
public sealed class GgufTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static GptModel Fixture(string name)
    {
        var fixture = new ReferenceFixture(name);
        return StateDictLoader.Load(fixture.Config, fixture.Weights);
    }

    private string Export(GptModel model, ExportDType dtype, string name = "model.gguf")
    {
        string path = _dir.File(name);
        model.Export(path, new ExportOptions(ModelFileFormat.Gguf) { DType = dtype });
        return path;
    }

    [Theory]
    [InlineData("tiny-noqkvbias")]
    [InlineData("tiny-qkvbias")]
    public void Float32RoundTripIsBitIdentical(string name)
    {
        using var model = Fixture(name);
        string path = Export(model, ExportDType.Float32);
        using var back = GptModel.Load(path);
        Assert.Equal(model.Config, back.Config);
        var a = model.Parameters();
        var b = back.Parameters();
        Assert.Equal(a.Select(p => p.Name), b.Select(p => p.Name));
        for (int i = 0; i < a.Count; i++)
            Assert.True(a[i].Value.Span.SequenceEqual(b[i].Value.Span), $"{a[i].Name} differs after the round trip");
    }

    [Fact]
    public void Float16RoundTripRoundsEachWeightOnce()
    {
        using var model = Fixture("tiny-qkvbias");
        using var back = GptModel.Load(Export(model, ExportDType.Float16));
        foreach (var (p, q) in model.Parameters().Zip(back.Parameters()))
        {
            // Vectors and the position embedding stay float32 (as llama.cpp's converter keeps them).
            bool matrix = p.Value.Rank == 2 && p != model.PositionEmbedding;
            for (int i = 0; i < p.Value.Length; i++)
                Assert.Equal(matrix ? (float)(Half)p.Value[i] : p.Value[i], q.Value[i]);
        }
    }

    [Fact]
    public void LayoutIsLlamaCppsGpt2()
    {
        using var model = Fixture("tiny-noqkvbias");
        string path = Export(model, ExportDType.Q8_0);
        using var file = GgufFile.Open(path);
        Assert.Equal(3u, file.Version);
        Assert.Equal("gpt2", file.GetString("general.architecture"));
        Assert.Equal(32, file.GetInteger("general.alignment"));
        Assert.Equal(model.Config.ContextLength, file.GetInteger("gpt2.context_length"));
        Assert.Equal(model.Config.EmbeddingDim, file.GetInteger("gpt2.embedding_length"));
        Assert.Equal(4 * model.Config.EmbeddingDim, file.GetInteger("gpt2.feed_forward_length"));
        Assert.Equal(model.Config.Layers, file.GetInteger("gpt2.block_count"));
        Assert.Equal(model.Config.Heads, file.GetInteger("gpt2.attention.head_count"));
        Assert.Equal(1e-5, file.GetFloat("gpt2.attention.layer_norm_epsilon")!.Value, 1e-12);
        Assert.Equal("gpt2", file.GetString("tokenizer.ggml.model"));
        // Offsets are multiples of the alignment, relative to an aligned data section.
        Assert.Equal(0, file.DataStart % 32);
        Assert.All(file.Tensors, t => Assert.Equal(0, t.Offset % 32));

        int e = model.Config.EmbeddingDim, v = model.Config.VocabSize;
        var qkv = file.Find("blk.0.attn_qkv.weight")!;
        Assert.Equal([e, 3L * e], qkv.Dims);
        Assert.Equal(GgmlType.Q8_0, qkv.Type);
        Assert.Equal([e, (long)v], file.Find("output.weight")!.Dims);
        Assert.Equal([4L * e, e], file.Find("blk.1.ffn_down.weight")!.Dims);
        Assert.Equal(GgmlType.F32, file.Find("position_embd.weight")!.Type);
        Assert.Equal(GgmlType.F32, file.Find("blk.0.attn_norm.weight")!.Type);
        // No qkv_bias: llama.cpp's gpt2 loader still requires the tensor, so it is there, all zeros.
        var bias = new float[3 * e];
        file.ReadRows(file.Find("blk.0.attn_qkv.bias")!, 0, bias);
        Assert.All(bias, x => Assert.Equal(0f, x));
        // Rows of query, key, value stacked: the key block starts at row e.
        var keyRow = new float[e];
        file.ReadRows(qkv, e, keyRow);
        var expected = new float[e];
        GgmlTypes.Dequantize(GgmlType.Q8_0, Q8(model.Blocks[0].Key.Weight.Value.Span[..e]), expected);
        Assert.Equal(expected, keyRow);
    }

    private static byte[] Q8(ReadOnlySpan<float> values)
    {
        var bytes = new byte[values.Length / 32 * 34];
        GgmlTypes.Quantize(GgmlType.Q8_0, values, bytes);
        return bytes;
    }

    [Fact]
    public void TokenizerIsGpt2sAndSelfContained()
    {
        using var model = new GptModel(new GptConfig { VocabSize = 50257, ContextLength = 8, EmbeddingDim = 32, Heads = 2, Layers = 1 });
        using var file = GgufFile.Open(Export(model, ExportDType.Float32));
        var tokens = (string[])file.Metadata["tokenizer.ggml.tokens"];
        var types = (int[])file.Metadata["tokenizer.ggml.token_type"];
        var merges = (string[])file.Metadata["tokenizer.ggml.merges"];
        Assert.Equal(50257, tokens.Length);
        Assert.Equal(50000, merges.Length);
        Assert.Equal("Ġt", tokens[256]);
        Assert.Equal("Ġ t", merges[0]);
        Assert.Equal("<|endoftext|>", tokens[50256]);
        Assert.Equal(3, types[50256]);
        Assert.Equal(1, types[0]);
        Assert.Equal(50256, file.GetInteger("tokenizer.ggml.bos_token_id"));
        Assert.Equal(50256, file.GetInteger("tokenizer.ggml.eos_token_id"));
        // Every token spelled in GPT-2's byte alphabet maps back to the tokenizer's bytes.
        var tokenizer = Gpt2Tokenizer.Instance;
        for (int id = 0; id < 50256; id += 97)
        {
            var bytes = tokens[id].Select(c => (byte)Array.IndexOf(Gpt2Vocabulary.ByteAlphabet, c)).ToArray();
            Assert.Equal(tokenizer.TokenBytes(id).ToArray(), bytes);
        }
    }

    [Fact]
    public void Q8_0LoadsStraightIntoInt8WithTheFileValues()
    {
        using var model = Fixture("tiny-noqkvbias");
        string path = Export(model, ExportDType.Q8_0);
        using var floats = GptModel.Load(path);
        using var int8 = GptModel.Load(path, new LoadOptions { Quantization = WeightQuantization.Int8 });
        Assert.True(int8.IsQuantized);
        foreach (var (f, q) in floats.LinearWeights().Zip(int8.LinearWeights()))
        {
            Assert.NotNull(q.Int8);
            using var dequantized = q.Int8!.Dequantize();
            // The file's blocks and fp16 scales, unchanged: dequantizing gives exactly what the float32 reader read.
            Assert.True(f.Value.Span.SequenceEqual(dequantized.Span), $"{f.Name}: the int8 weights are not the q8_0 file's");
        }
        var ids = new TokenBatch([1, 5, 9, 200, 7], 1, 5);
        float[] a, b;
        using (floats.NoGrad()) a = floats.Forward(ids).ToArray();
        using (int8.NoGrad()) b = int8.Forward(ids).ToArray();
        for (int i = 0; i < a.Length; i++) Assert.Equal(a[i], b[i], 3e-4f);
    }

    [Fact]
    public void Q8_0MatchesTheFloat32ModelClosely()
    {
        using var model = Fixture("tiny-qkvbias"); // emb 48: those matrices fall back to f16, ffn_down (192 wide) is q8_0
        using var back = GptModel.Load(Export(model, ExportDType.Q8_0));
        using (var file = GgufFile.Open(_dir.File("model.gguf")))
        {
            Assert.Equal(GgmlType.F16, file.Find("blk.0.attn_qkv.weight")!.Type);
            Assert.Equal(GgmlType.Q8_0, file.Find("blk.0.ffn_down.weight")!.Type);
        }
        foreach (var (p, q) in model.Parameters().Zip(back.Parameters()))
        {
            float max = p.Value.Span.ToArray().Max(MathF.Abs);
            for (int i = 0; i < p.Value.Length; i++) Assert.True(MathF.Abs(p.Value[i] - q.Value[i]) <= max / 127f, $"{p.Name}[{i}]");
        }
    }

    [Fact]
    public void QuantizedBlocksDequantizeAsGgmlDefinesThem()
    {
        // q4_0: d = 0.5, nibble j holds element j (low) and j + 16 (high), value (q − 8) · d.
        var q4 = new byte[18];
        BinaryPrimitives.WriteHalfLittleEndian(q4, (Half)0.5f);
        for (int j = 0; j < 16; j++) q4[2 + j] = (byte)(j | ((15 - j) << 4));
        var y = new float[32];
        GgmlTypes.Dequantize(GgmlType.Q4_0, q4, y);
        for (int j = 0; j < 16; j++)
        {
            Assert.Equal((j - 8) * 0.5f, y[j]);
            Assert.Equal((15 - j - 8) * 0.5f, y[j + 16]);
        }
        // q8_0 as ggml's reference quantizer: d = max|x| / 127, rounding half away from zero.
        var x = Enumerable.Range(0, 32).Select(i => (i - 16) * 0.25f).ToArray();
        var q8 = Q8(x);
        Assert.Equal((Half)(4f / 127f), BinaryPrimitives.ReadHalfLittleEndian(q8));
        Assert.Equal(-127, (sbyte)q8[2]);
        GgmlTypes.Dequantize(GgmlType.Q8_0, q8, y);
        for (int i = 0; i < 32; i++) Assert.Equal(x[i], y[i], 4f / 127f / 2 + 1e-3f);
    }

    [Fact]
    public void ConvertAndInspectOnTheCommandLine()
    {
        string input = FixturePaths.Get("reference", "tiny-qkvbias-hf", "model.safetensors");
        string gguf = _dir.File("hf.gguf");
        var output = new StringWriter();
        Assert.Equal(0, ConvertCommand.Create(output).Parse([input, gguf, "--dtype", "f16"]).Invoke());
        Assert.Contains("(gguf)", output.ToString());
        output = new StringWriter();
        Assert.Equal(0, InspectCommand.Create(output, plain: true).Parse([gguf]).Invoke());
        string listing = output.ToString();
        Assert.Contains("format: GGUF (f16 + f32)", listing);
        Assert.Contains("blk.0.attn_qkv.weight\tF16\t[144, 48]", listing);
        Assert.Contains("metadata general.architecture: gpt2", listing);
        // And back: a GGUF is a model input like any other (the Hugging Face model's tied head is written as output.weight).
        string back = _dir.File("back.safetensors");
        Assert.Equal(0, ConvertCommand.Create(new StringWriter()).Parse([gguf, back]).Invoke());
        using var model = GptModel.Load(back);
        Assert.True(model.Config.QkvBias);
        // --dtype is for exported formats only; unknown types are named.
        Assert.Equal(1, ConvertCommand.Create(new StringWriter()).Parse([input, _dir.File("x.safetensors"), "--dtype", "f16"]).Invoke());
        Assert.Equal(1, ConvertCommand.Create(new StringWriter()).Parse([input, _dir.File("x.gguf"), "--dtype", "q4_0"]).Invoke());
        Assert.False(File.Exists(_dir.File("x.gguf")));
    }

    [Fact]
    public void Q8_0FromAnInt8ModelRequantizesTheSameValues()
    {
        using var model = Fixture("tiny-noqkvbias");
        model.QuantizeInt8();
        using var back = GptModel.Load(Export(model, ExportDType.Q8_0), new LoadOptions { Quantization = WeightQuantization.Int8 });
        foreach (var (p, q) in model.LinearWeights().Zip(back.LinearWeights()))
        {
            using var a = p.Int8!.Dequantize();
            using var b = q.Int8!.Dequantize();
            // The scale goes through fp16 (11 bits): values agree to its rounding.
            for (int i = 0; i < a.Length; i++) Assert.Equal(a[i], b[i], MathF.Abs(a[i]) * 2e-3f + 1e-6f);
        }
    }

    // ------------------------------------------------------------ hostile and foreign files

    private static byte[] Header(uint version, ulong tensors, ulong kvs, params byte[][] rest)
    {
        var bytes = new List<byte>();
        bytes.AddRange(BitConverter.GetBytes(GgufFile.Magic));
        bytes.AddRange(BitConverter.GetBytes(version));
        bytes.AddRange(BitConverter.GetBytes(tensors));
        bytes.AddRange(BitConverter.GetBytes(kvs));
        foreach (var r in rest) bytes.AddRange(r);
        return [.. bytes];
    }

    private static byte[] Str(string s) => [.. BitConverter.GetBytes((ulong)Encoding.UTF8.GetByteCount(s)), .. Encoding.UTF8.GetBytes(s)];

    private static byte[] U32(uint v) => BitConverter.GetBytes(v);

    private static byte[] U64(ulong v) => BitConverter.GetBytes(v);

    public static TheoryData<string, byte[], string> HostileHeaders => new()
    {
        { "bad magic", [.. "GGUX"u8, .. new byte[40]], "does not start with 'GGUF'" },
        { "version 1", Header(1, 0, 0), "version 1" },
        { "a billion keys", Header(3, 0, 1_000_000_000), "metadata entries" },
        { "a billion tensors", Header(3, 1_000_000_000, 0), "tensors" },
        { "terabyte key", Header(3, 0, 1, U64(1UL << 40)), "claims 1099511627776 bytes" },
        { "string past the end", Header(3, 0, 1, Str("k"), U32(8), U64(1000)), "runs past the end" },
        { "array bomb", Header(3, 0, 1, Str("k"), U32(9), U32(8), U64(ulong.MaxValue / 2)), "elements" },
        { "array of arrays", Header(3, 0, 1, Str("k"), U32(9), U32(9), U64(1)), "array of arrays" },
        { "unknown value type", Header(3, 0, 1, Str("k"), U32(77), U64(0)), "unknown value type 77" },
        { "duplicate key", Header(3, 0, 2, Str("k"), U32(4), U32(1), Str("k"), U32(4), U32(2)), "appears twice" },
        { "bad alignment", Header(3, 0, 1, Str("general.alignment"), U32(4), U32(48)), "power of two" },
        { "five dimensions", Header(3, 1, 0, Str("t"), U32(5), new byte[64]), "5 dimensions" },
        { "dimension overflow", Header(3, 1, 0, Str("t"), U32(3), U64(1UL << 40), U64(1UL << 40), U64(1UL << 40), U32(0), U64(0)), "too many elements" },
        { "unknown tensor type", Header(3, 1, 0, Str("t"), U32(1), U64(4), U32(99), U64(0)), "unknown ggml type 99" },
        { "partial block", Header(3, 1, 0, Str("t"), U32(1), U64(33), U32(8), U64(0)), "not whole blocks" },
        { "data past the end", Header(3, 1, 0, Str("t"), U32(1), U64(1 << 20), U32(0), U64(0)), "runs past the end of the file" },
        { "misaligned offset", Header(3, 1, 0, Str("t"), U32(1), U64(1), U32(0), U64(3), new byte[64]), "not a multiple of the alignment" },
        { "truncated header", Header(3, 1, 1, Str("general.architecture")), "truncated" },
    };

    [Theory]
    [MemberData(nameof(HostileHeaders))]
    public void HostileHeadersGetOneClearError(string what, byte[] bytes, string expected)
    {
        string path = _dir.File("hostile.gguf");
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<InvalidDataException>(() => GptModel.Load(path).Dispose());
        Assert.Contains(path, e.Message);
        Assert.Contains(expected, e.Message);
        Assert.True(e.Message.Length < 400, $"{what}: {e.Message}");
    }

    [Fact]
    public void ForeignModelsAreRefusedByName()
    {
        string path = _dir.File("llama.gguf");
        GgufWriter.Write(path, [new("general.architecture", "llama"), new("llama.block_count", 1u)], []);
        var e = Assert.Throws<InvalidDataException>(() => GptModel.Load(path).Dispose());
        Assert.Contains("architecture 'llama'", e.Message);

        GgufWriter.Write(path, [new("general.architecture", "gpt2"), new("tokenizer.ggml.model", "llama")], []);
        e = Assert.Throws<InvalidDataException>(() => GptModel.Load(path).Dispose());
        Assert.Contains("tokenizer is 'llama'", e.Message);

        // A quantization GptSharp does not read is named, before anything is allocated.
        using var model = Fixture("tiny-noqkvbias");
        string ours = Export(model, ExportDType.Float32);
        var bytes = File.ReadAllBytes(ours);
        // Retype token_embd (f32, 32 × 1000) as iq4_nl (blocks of 32, 18 bytes): the data still fits, the type is unreadable.
        int at = IndexOfTensorType(bytes, "token_embd.weight");
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(at), (uint)GgmlType.IQ4_NL);
        File.WriteAllBytes(path, bytes);
        e = Assert.Throws<InvalidDataException>(() => GptModel.Load(path).Dispose());
        Assert.Contains("'token_embd.weight' is iq4_nl, which GptSharp cannot read", e.Message);
    }

    private static int IndexOfTensorType(byte[] bytes, string name)
    {
        byte[] key = Str(name);
        int at = bytes.AsSpan().IndexOf(key);
        // name, n_dims (4), dims (8 each), then the type.
        int dims = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(at + key.Length));
        return at + key.Length + 4 + 8 * dims;
    }

    [Fact]
    public void TruncatedFilesFailClearlyAtEveryLength()
    {
        using var model = Fixture("tiny-noqkvbias");
        var bytes = File.ReadAllBytes(Export(model, ExportDType.Q8_0));
        string path = _dir.File("cut.gguf");
        foreach (int length in new[] { 0, 3, 23, 100, 5000, bytes.Length / 2, bytes.Length - 33 }) // the last 0-31 bytes may be padding
        {
            File.WriteAllBytes(path, bytes[..length]);
            var e = Assert.Throws<InvalidDataException>(() => GptModel.Load(path).Dispose());
            Assert.Contains(path, e.Message);
        }
    }
}
