using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using GptSharp.Model;
using static GptSharp.Tests.Checkpoints.CheckpointTestHelpers;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Pretrained;
using GptSharp.Formats.PyTorch;
using GptSharp.Checkpoints.Gpt2;
using GptSharp.Tensors;

namespace GptSharp.Tests.Checkpoints;

public class PthTests
{
    private static readonly JsonElement Expected = JsonDocument.Parse(File.ReadAllText(FixturePaths.Get("pth", "expected.json"))).RootElement;

    private static GptConfig FixtureConfig(bool qkvBias) => new()
    {
        VocabSize = 64, ContextLength = 16, EmbeddingDim = 32, Heads = 4, Layers = 2, DropRate = 0f, QkvBias = qkvBias,
    };

    [Theory]
    [InlineData("model.pth", "tensors")]
    [InlineData("model_qkv_bias.pth", "tensors")]
    [InlineData("model_and_optimizer.pth", "model_state_dict")]
    public void FixtureStateDictsHaveTheExpectedNamesShapesAndValues(string fileName, string key)
    {
        var expected = Expected.GetProperty("files").GetProperty(fileName);
        using var file = PthFile.Open(FixturePaths.Get("pth", fileName));
        Assert.Equal(expected.GetProperty("zip_members").EnumerateArray().Select(m => m.GetProperty("name").GetString()), file.RecordNames);
        var stateDict = file.StateDict();
        var tensors = expected.GetProperty(key).EnumerateArray().ToList();
        Assert.Equal(tensors.Select(t => t.GetProperty("name").GetString()), stateDict.Tensors.Select(t => t.Name));
        foreach (var t in tensors)
        {
            string name = t.GetProperty("name").GetString()!;
            var stored = stateDict.Find(name)!;
            Assert.Equal(TensorDType.F32, stored.DType);
            Assert.Equal(t.GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()), stored.Shape);
            var values = new float[stored.ElementCount];
            stateDict.ReadInto(name, values);
            Assert.Equal(t.GetProperty("first_values").EnumerateArray().Select(v => (float)v.GetDouble()), values.Take(6));
            Assert.Equal(t.GetProperty("sum").GetDouble(), values.Sum(v => (double)v), 6);
        }
    }

    [Fact]
    public void BookModelPthLoadsIntoTheModel()
    {
        using var model = PthModelFile.LoadModel(FixturePaths.Get("pth", "model.pth"), FixtureConfig(false));
        using var file = PthFile.Open(FixturePaths.Get("pth", "model.pth"));
        var sd = file.StateDict();
        foreach (var p in model.Parameters())
        {
            var values = new float[p.Length];
            sd.ReadInto(p.Name, values);
            Assert.Equal(values, p.Value.ToArray());
        }
        // Without a config the head count cannot come from the shapes (width 32 is not a GPT-2 width).
        var e = Assert.Throws<InvalidDataException>(() => PthModelFile.LoadModel(FixturePaths.Get("pth", "model.pth")));
        Assert.Contains("n_heads", e.Message);
    }

    [Fact]
    public void HuggingFaceFixtureEqualsTheQkvBiasPth()
    {
        using var pth = PthModelFile.LoadModel(FixturePaths.Get("pth", "model_qkv_bias.pth"), FixtureConfig(true));
        using var hf = Gpt2Import.LoadHuggingFace(FixturePaths.Get("pth", "tiny_gpt2_hf.safetensors"), FixtureConfig(true));
        foreach (var (a, b) in pth.Parameters().Zip(hf.Parameters()))
        {
            if (a.Name == "out_head.weight") continue; // the HF file ties the head to wte
            Assert.True(a.Value.Span.SequenceEqual(b.Value.Span), a.Name);
        }
        Assert.Equal(pth.TokenEmbedding.Value.ToArray(), hf.OutHead.Value.ToArray());
    }

    [Fact]
    public void OptimizerStateMapsIndicesToParametersInModelOrder()
    {
        var expected = Expected.GetProperty("files").GetProperty("model_and_optimizer.pth").GetProperty("optimizer_state_dict");
        var (model, optimizer) = PthModelFile.Load(FixturePaths.Get("pth", "model_and_optimizer.pth"), FixtureConfig(false));
        using (model)
        using (optimizer)
        {
            Assert.NotNull(optimizer);
            Assert.Equal(2, optimizer.StepCount);
            Assert.Equal(0.0004f, optimizer.LearningRate);
            Assert.Equal(0.1f, optimizer.WeightDecay);
            Assert.Equal(0.9f, optimizer.Beta1);
            Assert.Equal(0.999f, optimizer.Beta2);
            Assert.Equal(1e-8f, optimizer.Eps);
            Assert.Equal(expected.GetProperty("param_index_to_name").EnumerateArray().Select(n => n.GetString()), model.Parameters().Select(p => p.Name));
            foreach (var s in expected.GetProperty("state").EnumerateObject())
            {
                int i = int.Parse(s.Name);
                Assert.Equal(s.Value.GetProperty("param_name").GetString(), model.Parameters()[i].Name);
                Assert.Equal(s.Value.GetProperty("exp_avg").GetProperty("first_values").EnumerateArray().Select(v => (float)v.GetDouble()), optimizer.ExpAvg[i].ToArray().Take(6));
                Assert.Equal(s.Value.GetProperty("exp_avg_sq").GetProperty("first_values").EnumerateArray().Select(v => (float)v.GetDouble()), optimizer.ExpAvgSq[i].ToArray().Take(6));
            }
        }
    }

    [Fact]
    public void ModelPthRoundTripIncludesTheMaskBuffers()
    {
        using var dir = new TempDir();
        using var model = RandomModel(Tiny with { QkvBias = true });
        string path = dir.File("model.pth");
        PthModelFile.SaveModel(model, path);
        using (var file = PthFile.Open(path))
        {
            var names = file.StateDict().Tensors.Select(t => t.Name).ToList();
            Assert.Equal(["tok_emb.weight", "pos_emb.weight", "trf_blocks.0.att.mask", "trf_blocks.0.att.W_query.weight"], names.Take(4));
            Assert.Equal(model.Parameters().Count + Tiny.Layers, names.Count);
            var mask = new float[64];
            file.StateDict().ReadInto("trf_blocks.1.att.mask", mask);
            Assert.Equal(28f, mask.Sum()); // triu(ones(8, 8), 1)
            Assert.Equal(1f, mask[1]);
            Assert.Equal(0f, mask[8]);
        }
        using var loaded = PthModelFile.LoadModel(path, model.Config);
        AssertSameParameters(model, loaded);
    }

    [Fact]
    public void ModelAndOptimizerRoundTrip()
    {
        using var dir = new TempDir();
        var (model, optimizer) = PthModelFile.Load(FixturePaths.Get("pth", "model_and_optimizer.pth"), FixtureConfig(false));
        using (model)
        using (optimizer)
        {
            string path = dir.File("model_and_optimizer.pth");
            PthModelFile.Save(model, optimizer!, path);
            var (model2, optimizer2) = PthModelFile.Load(path, FixtureConfig(false));
            using (model2)
            using (optimizer2)
            {
                AssertSameParameters(model, model2);
                Assert.Equal(optimizer!.StepCount, optimizer2!.StepCount);
                Assert.Equal(optimizer.LearningRate, optimizer2.LearningRate);
                for (int i = 0; i < model.Parameters().Count; i++)
                {
                    Assert.Equal(optimizer.ExpAvg[i].ToArray(), optimizer2.ExpAvg[i].ToArray());
                    Assert.Equal(optimizer.ExpAvgSq[i].ToArray(), optimizer2.ExpAvgSq[i].ToArray());
                }
            }
        }
    }

    [Fact]
    public void FreshOptimizerHasNoStateLikePyTorch()
    {
        using var dir = new TempDir();
        using var model = RandomModel(Tiny);
        using var optimizer = new AdamW(model.Parameters(), 1e-3f, 0.05f);
        string path = dir.File("fresh.pth");
        PthModelFile.Save(model, optimizer, path);
        using var file = PthFile.Open(path);
        var osd = file.OptimizerStateDict()!;
        Assert.Empty(((PyDict)osd["state"]!).Items);
        var group = (PyDict)((List<object?>)osd["param_groups"]!)[0]!;
        Assert.Equal(0.001, (double)group["lr"]!);
        Assert.Equal(0.05, (double)group["weight_decay"]!);
        Assert.Equal(new PyTuple([0.9, 0.999]), group["betas"], new TupleComparer());
    }

    private sealed class TupleComparer : IEqualityComparer<object?>
    {
        public new bool Equals(object? x, object? y) => x is PyTuple a && y is PyTuple b && a.Items.SequenceEqual(b.Items);
        public int GetHashCode(object? obj) => 0;
    }

    [Fact]
    public void StridedAndOffsetAndOtherDtypeTensorsAreRead()
    {
        using var dir = new TempDir();
        var storage = new byte[6 * 4];
        for (int i = 0; i < 6; i++) BinaryPrimitives.WriteSingleLittleEndian(storage.AsSpan(4 * i), i);
        var doubles = new byte[3 * 8];
        for (int i = 0; i < 3; i++) BinaryPrimitives.WriteDoubleLittleEndian(doubles.AsSpan(8 * i), i + 0.5);
        var p = new PickleBuilder().Proto().OrderedDict().Mark()
            .Str("transposed").Tensor("FloatStorage", "0", 6, 0, [2, 3], [1, 2])
            .Str("offset").Tensor("FloatStorage", "0", 6, 1, [2], [2])
            .Str("f64").Tensor("DoubleStorage", "1", 3, 0, [3], [1])
            .Op('u').Op('.');
        string path = dir.File("strided.pth");
        WriteArchive(path, p.Bytes, ("0", storage), ("1", doubles));
        using var file = PthFile.Open(path);
        var sd = file.StateDict();
        var t = new float[6];
        sd.ReadInto("transposed", t);
        Assert.Equal([0f, 2f, 4f, 1f, 3f, 5f], t);
        var o = new float[2];
        sd.ReadInto("offset", o);
        Assert.Equal([1f, 3f], o);
        var d = new float[3];
        sd.ReadInto("f64", d);
        Assert.Equal([0.5f, 1.5f, 2.5f], d);
        Assert.Equal(TensorDType.F64, sd.Find("f64")!.DType);
    }

    [Fact]
    public void DisallowedGlobalIsRefusedByName()
    {
        using var dir = new TempDir();
        var p = new PickleBuilder().Proto().Global("os", "system").Str("echo hi").Op(0x85).Op('R').Op('.');
        string path = dir.File("evil.pth");
        WriteArchive(path, p.Bytes);
        var e = Assert.Throws<InvalidDataException>(() => PthFile.Open(path));
        Assert.Contains("global 'os.system' is not allowed", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Theory]
    [InlineData(0x95, "0x95")] // FRAME (protocol 4) is not in the allow list
    [InlineData((byte)'i', "0x69")] // INST would instantiate a class
    [InlineData((byte)'R', "not an allowed global")] // REDUCE on a string
    public void DisallowedOpcodeIsRefused(byte opcode, string expected)
    {
        using var dir = new TempDir();
        var p = new PickleBuilder().Proto().Str("x").Op((char)opcode).Op('.');
        if (opcode == 'R') p = new PickleBuilder().Proto().Str("x").Op(')').Op('R').Op('.');
        string path = dir.File("bad.pth");
        WriteArchive(path, p.Bytes);
        var e = Assert.Throws<InvalidDataException>(() => PthFile.Open(path));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void TruncatedAndNonZipFilesAreRejected()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(FixturePaths.Get("pth", "model.pth"));
        string cut = dir.File("cut.pth");
        File.WriteAllBytes(cut, bytes[..^200]);
        var e = Assert.Throws<InvalidDataException>(() => PthFile.Open(cut));
        Assert.Contains(cut, e.Message);
        File.WriteAllBytes(cut, bytes[..60000]);
        Assert.Throws<InvalidDataException>(() => PthFile.Open(cut));
        string legacy = dir.File("legacy.pth");
        File.WriteAllBytes(legacy, [0x80, 2, (byte)'.']);
        e = Assert.Throws<InvalidDataException>(() => PthFile.Open(legacy));
        Assert.Contains("legacy", e.Message);
    }

    [Fact]
    public void MissingOrShortStorageIsRejected()
    {
        using var dir = new TempDir();
        var p = new PickleBuilder().Proto().OrderedDict().Mark().Str("w").Tensor("FloatStorage", "0", 6, 0, [6], [1]).Op('u').Op('.');
        string path = dir.File("short.pth");
        WriteArchive(path, p.Bytes, ("0", new byte[8]));
        Assert.Contains("has 8 bytes", Assert.Throws<InvalidDataException>(() => PthFile.Open(path)).Message);
        WriteArchive(path, p.Bytes);
        Assert.Contains("is missing", Assert.Throws<InvalidDataException>(() => PthFile.Open(path)).Message);
        var past = new PickleBuilder().Proto().OrderedDict().Mark().Str("w").Tensor("FloatStorage", "0", 6, 4, [3], [1]).Op('u').Op('.');
        WriteArchive(path, past.Bytes, ("0", new byte[24]));
        Assert.Contains("reaches element 6", Assert.Throws<InvalidDataException>(() => PthFile.Open(path)).Message);
    }

    [Fact]
    public void CompressedRecordIsRefusedClearly()
    {
        using var dir = new TempDir();
        string path = dir.File("deflated.pth");
        using (var zip = new System.IO.Compression.ZipArchive(File.Create(path), System.IO.Compression.ZipArchiveMode.Create))
        {
            var entry = zip.CreateEntry("archive/data.pkl", System.IO.Compression.CompressionLevel.Optimal);
            using var s = entry.Open();
            s.Write(new PickleBuilder().Proto().OrderedDict().Op('.').Bytes);
        }
        Assert.Contains("is compressed", Assert.Throws<InvalidDataException>(() => PthFile.Open(path)).Message);
    }

    [Fact]
    public void Torch2RecordsAndSevenArgumentRebuildAreAccepted()
    {
        using var dir = new TempDir();
        var storage = new byte[8];
        BinaryPrimitives.WriteSingleLittleEndian(storage, 1.5f);
        BinaryPrimitives.WriteSingleLittleEndian(storage.AsSpan(4), -2f);
        var p = new PickleBuilder().Proto().OrderedDict().Mark()
            .Str("w").Tensor("FloatStorage", "0", 2, 0, [2], [1], withMetadata: true)
            .Op('u').Op('.');
        string path = dir.File("torch2.pth");
        using (var stream = File.Create(path))
        {
            var zip = new TorchZipWriter(stream);
            zip.Add("torch2/data.pkl", p.Bytes);
            zip.Add("torch2/.format_version", "1"u8.ToArray());
            zip.Add("torch2/.storage_alignment", "64"u8.ToArray());
            zip.Add("torch2/byteorder", "little"u8.ToArray());
            zip.Add("torch2/data/0", storage);
            zip.Add("torch2/version", "3\n"u8.ToArray());
            zip.Add("torch2/.data/serialization_id", "1234"u8.ToArray());
            zip.Finish();
        }
        using var file = PthFile.Open(path);
        var values = new float[2];
        file.StateDict().ReadInto("w", values);
        Assert.Equal([1.5f, -2f], values);
    }

    [Fact]
    public void RecordsPastFourGiBUseZip64Offsets()
    {
        // Two 2.2 GB records written as holes (a sparse file: no disk space, no time), then a small one past 4 GiB.
        using var dir = new TempDir();
        string path = dir.File("big.zip");
        const long hole = 2_200_000_000;
        using (var stream = new FileStream(path, FileMode.CreateNew))
        {
            var zip = new TorchZipWriter(stream);
            zip.Add("archive/data/0", hole, 0, s => s.Seek(hole, SeekOrigin.Current));
            zip.Add("archive/data/1", hole, 0, s => s.Seek(hole, SeekOrigin.Current));
            zip.Add("archive/tail", "after 4 GiB"u8.ToArray());
            zip.Finish();
        }
        using var reader = new TorchZipReader(path);
        Assert.True(reader.Length > 4L << 30);
        Assert.Equal(["archive/data/0", "archive/data/1", "archive/tail"], reader.Names);
        Assert.Equal(hole, reader.SizeOf("archive/data/1"));
        Assert.Equal("after 4 GiB", Encoding.UTF8.GetString(reader.ReadAll("archive/tail")));
    }

    [Fact]
    public void ShapeMismatchInPthNamesTensorAndShapes()
    {
        var e = Assert.Throws<InvalidDataException>(() => PthModelFile.LoadModel(FixturePaths.Get("pth", "model.pth"), FixtureConfig(false) with { ContextLength = 32 }));
        Assert.Contains("shape mismatch for 'pos_emb.weight': the file has [16, 32], the model expects [32, 32]", e.Message);
    }

    /// <summary>A torch.save-style archive with the given pickle and storages, through the library's zip writer.</summary>
    private static void WriteArchive(string path, byte[] pickle, params (string Key, byte[] Data)[] storages)
    {
        using var stream = File.Create(path);
        var zip = new TorchZipWriter(stream);
        zip.Add("archive/data.pkl", pickle);
        foreach (var (key, data) in storages) zip.Add("archive/data/" + key, data);
        zip.Add("archive/version", "3\n"u8.ToArray());
        zip.Finish();
    }

    /// <summary>Hand-assembled pickles for the unpickler's edge cases.</summary>
    private sealed class PickleBuilder
    {
        private readonly List<byte> _b = new();
        public byte[] Bytes => _b.ToArray();
        public PickleBuilder Op(char c) { _b.Add((byte)c); return this; }
        public PickleBuilder Op(int c) { _b.Add((byte)c); return this; }
        public PickleBuilder Proto() { _b.Add(0x80); _b.Add(2); return this; }
        public PickleBuilder Mark() => Op('(');
        public PickleBuilder Global(string module, string name) { Op('c'); _b.AddRange(Encoding.UTF8.GetBytes(module + "\n" + name + "\n")); return this; }
        public PickleBuilder OrderedDict() => Global("collections", "OrderedDict").Op(')').Op('R');
        public PickleBuilder Int(long v) { Op('J'); var b = new byte[4]; BinaryPrimitives.WriteInt32LittleEndian(b, (int)v); _b.AddRange(b); return this; }
        public PickleBuilder Str(string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s);
            Op('X');
            var len = new byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)bytes.Length);
            _b.AddRange(len);
            _b.AddRange(bytes);
            return this;
        }
        public PickleBuilder Tuple(long[] items) { Mark(); foreach (var i in items) Int(i); return Op('t'); }
        public PickleBuilder Tensor(string storageType, string key, long numel, long offset, long[] shape, long[] stride, bool withMetadata = false)
        {
            Global("torch._utils", "_rebuild_tensor_v2").Mark();
            Mark().Str("storage").Global("torch", storageType).Str(key).Str("cpu").Int(numel).Op('t').Op('Q');
            Int(offset).Tuple(shape).Tuple(stride).Op(0x89).OrderedDict();
            if (withMetadata) Op('}'); // torch 2.x appends a metadata dict
            return Op('t').Op('R');
        }
    }
}
