using System.Buffers.Binary;
using System.Text;
using GptSharp.Checkpoints;
using GptSharp.Cli;
using GptSharp.Formats;
using GptSharp.Model;
using GptSharp.Pretrained;
using GptSharp.IO;
using GptSharp.Tests.Checkpoints;
using GptSharp.Tests.Checkpoints.TensorFlow;
using GptSharp.Formats.TensorFlow;
using GptSharp.Formats.PyTorch;
using GptSharp.Checkpoints.Gpt2;

namespace GptSharp.Tests.Hostile;

/// <summary>
/// Files an attacker would build, a few hundred bytes each: every one must fail with one clear format error naming
/// the file, in bounded time and memory (never a stack overflow, a hang, an OutOfMemoryException or a wrong result).
/// </summary>
public sealed class HostileInputTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("gptsharp-hostile-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string PthOf(byte[] pickle, params (string Key, byte[] Data)[] storages)
    {
        string path = Path.Combine(_dir, "hostile.pth");
        PickleBuilder.WritePth(path, pickle, storages);
        return path;
    }

    private static void AssertNamesFile(Exception e, string path) => Assert.Contains(Path.GetFileName(path), e.Message);

    [Fact]
    public void ASelfReferencingListIsWalkedOnce()
    {
        // l = []; l.append(l)
        string path = PthOf(new PickleBuilder().Op((byte)']', (byte)'q', 0, (byte)'h', 0, (byte)'a').Stop());
        var e = Bounded.Rejects<InvalidDataException>(() => GptModel.Load(path));
        AssertNamesFile(e, path);
        Assert.Contains("no state dict", e.Message);
    }

    [Fact]
    public void A300kDeepListDoesNotOverflowTheStack()
    {
        var b = new PickleBuilder();
        const int depth = 300_000;
        for (int i = 0; i < depth; i++) b.Op((byte)']');
        for (int i = 1; i < depth; i++) b.Op((byte)'a');
        string path = PthOf(b.Stop());
        var e = Bounded.Rejects<InvalidDataException>(() => ModelFileInfo.Read(path), maxAllocatedBytes: 256L << 20);
        AssertNamesFile(e, path);
    }

    [Fact]
    public void NestedSharedTuplesDoNotHang()
    {
        // t = (); then 100 times t = (t, t): 2^100 paths through 101 objects.
        var b = new PickleBuilder().Op((byte)')', (byte)'q', 0);
        for (int i = 0; i < 100; i++) b.Op((byte)'h', 0, 0x86, (byte)'q', 0); // top of stack is t: push t, TUPLE2
        byte[] pickle = b.Stop();
        Assert.True(pickle.Length < 800);
        string path = PthOf(pickle);
        var e = Bounded.Rejects<InvalidDataException>(() => ModelFileInfo.Read(path), seconds: 10);
        AssertNamesFile(e, path);
        Assert.Contains("no state dict", e.Message); // unpickled fine, walked once per object
    }

    [Fact]
    public void SharedTuplesInAnOptimizerStateAreShownShortly()
    {
        // A valid state dict beside an optimizer_state_dict whose param_groups hold the shared-tuple DAG: inspect prints it cut short.
        var b = new PickleBuilder().Op((byte)'}', (byte)'(').Str("model_state_dict").OrderedDict().Op((byte)'(').Str("w").Tensor("0", 4, 0, [4], [1]).Op((byte)'u');
        b.Str("optimizer_state_dict").Op((byte)'}', (byte)'(').Str("state").Op((byte)'}').Str("param_groups").Op((byte)']', (byte)'}', (byte)'(').Str("betas");
        b.Op((byte)')', (byte)'q', 1);
        for (int i = 0; i < 100; i++) b.Op((byte)'h', 1, 0x86, (byte)'q', 1);
        b.Op((byte)'u', (byte)'a', (byte)'u', (byte)'u');
        string path = PthOf(b.Stop(), ("0", new byte[16]));
        var (error, allocated) = Bounded.Run(() => Assert.Contains("(...)", ModelFileInfo.Read(path).OptimizerSummary), TimeSpan.FromSeconds(10));
        Assert.Null(error);
        Assert.True(allocated < 64 << 20);
    }

    [Fact]
    public void AStrideZeroEmbeddingCannotExpandMemory()
    {
        // pos_emb [2^24, 4] over a 4-float storage: 256 MiB in memory from 16 stored bytes.
        string path = PthOf(PickleBuilder.StateDictOfOne("pos_emb.weight", 4, [1L << 24, 4], [0, 1]), ("0", new byte[16]));
        var e = Bounded.Rejects<InvalidDataException>(() => GptModel.Load(path));
        AssertNamesFile(e, path);
        Assert.Contains("repeats stored elements", e.Message);
        e = Bounded.Rejects<InvalidDataException>(() =>
        {
            using var loaded = ModelStore.Open(path);
            ModelConverter.Write(loaded, Path.Combine(_dir, "out.safetensors"), ModelConverter.ResolveFormat(Path.Combine(_dir, "out.safetensors"), null));
        });
        Assert.False(File.Exists(Path.Combine(_dir, "out.safetensors")));
    }

    [Fact]
    public void AWeightAliasedToOneFloatIsRefused()
    {
        string path = PthOf(PickleBuilder.StateDictOfOne("trf_blocks.0.att.W_query.weight", 1, [16, 4], [0, 0]), ("0", new byte[4]));
        using var file = PthFile.Open(path);
        var e = Assert.Throws<InvalidDataException>(() => file.StateDict());
        Assert.Contains("'trf_blocks.0.att.W_query.weight' [16, 4]", e.Message);
    }

    [Fact]
    public void LegitimateStridesAreStillAccepted()
    {
        // A transposed view ([4, 2] over a 2x4 storage, strides (1, 4)) neither overlaps nor expands.
        string path = PthOf(PickleBuilder.StateDictOfOne("w", 8, [4, 2], [1, 4]), ("0", Enumerable.Range(0, 8).SelectMany(i => BitConverter.GetBytes((float)i)).ToArray()));
        using var file = PthFile.Open(path);
        var sd = file.StateDict();
        var values = new float[8];
        sd.ReadInto("w", values);
        Assert.Equal([0f, 4, 1, 5, 2, 6, 3, 7], values);
    }

    [Theory]
    [InlineData(new long[] { 65536, 65536, 65536, 65536 }, new long[] { 0, 0, 0, 1 }, 1L)]          // shape product wraps to 0
    [InlineData(new long[] { 2, 2 }, new long[] { long.MaxValue / 2, 1 }, 4L)]                         // stride overflow
    [InlineData(new long[] { 4 }, new long[] { 1 }, long.MaxValue / 2)]                                 // storage bytes overflow
    public void OverflowingShapesStridesAndStoragesAreFormatErrors(long[] shape, long[] stride, long storage)
    {
        string path = PthOf(PickleBuilder.StateDictOfOne("w", storage, shape, stride), ("0", new byte[16]));
        var e = Bounded.Rejects<InvalidDataException>(() => ModelFileInfo.Read(path));
        AssertNamesFile(e, path);
    }

    [Fact]
    public void Zip64SizesPastTheFileAreFormatErrors()
    {
        string path = PthOf(PickleBuilder.StateDictOfOne("w", 4, [4], [1]), ("0", new byte[16]));
        var bytes = File.ReadAllBytes(path);
        // The zip64 end record's central-directory offset (at +48) set to 2^63 - 1.
        int z64 = FindLast(bytes, [0x50, 0x4b, 0x06, 0x06]);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(z64 + 48), long.MaxValue);
        File.WriteAllBytes(path, bytes);
        var e = Bounded.Rejects<InvalidDataException>(() => ModelFileInfo.Read(path));
        AssertNamesFile(e, path);
    }

    [Fact]
    public void ClaimedLayersInSafeTensorsMetadataAreCheckedAgainstTheTensors()
    {
        string path = Path.Combine(_dir, "claims.safetensors");
        string config = """{"vocab_size":50,"context_length":8,"emb_dim":16,"n_heads":2,"n_layers":100000000,"drop_rate":0,"qkv_bias":false}""";
        CheckpointTestHelpers.WriteRaw(path, "{\"__metadata__\":{\"config\":" + System.Text.Json.JsonSerializer.Serialize(config) + "}}", []);
        var e = Bounded.Rejects<InvalidDataException>(() => GptModel.Load(path));
        AssertNamesFile(e, path);
        Assert.Contains("parameters but the file's tensors hold only 0 values", e.Message);
        var info = ModelFileInfo.Read(path); // inspect still works, with the config marked unknown
        Assert.Null(info.Config);
    }

    [Theory]
    [InlineData("trf_blocks.99999999.att.W_query.weight")]
    [InlineData("trf_blocks.99999999999999999999.att.W_query.weight")]
    public void HugeLayerIndicesInTensorNamesAreRefused(string name)
    {
        string path = Path.Combine(_dir, "index.safetensors");
        CheckpointTestHelpers.WriteRaw(path, "{\"tok_emb.weight\":{\"dtype\":\"F32\",\"shape\":[2,64],\"data_offsets\":[0,512]},"
            + "\"pos_emb.weight\":{\"dtype\":\"F32\",\"shape\":[1,64],\"data_offsets\":[512,768]},"
            + $"\"{name}\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[768,772]}}}}", new byte[772]);
        var e = Bounded.Rejects<InvalidDataException>(() => GptModel.Load(path));
        AssertNamesFile(e, path);
    }

    [Fact]
    public void OverflowingSafeTensorsShapesAreFormatErrors()
    {
        string path = Path.Combine(_dir, "overflow.safetensors");
        CheckpointTestHelpers.WriteRaw(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,4]}}", new byte[4]);
        var e = Bounded.Rejects<InvalidDataException>(() => ModelFileInfo.Read(path));
        Assert.Contains("overflows", e.Message);
    }

    [Fact]
    public void HparamsWithTwoBillionLayersAreCheckedBeforeAnythingIsBuilt()
    {
        using var model = new GptModel(CheckpointTestHelpers.Tiny with { QkvBias = true }, new GptSharp.Randomness.FastRandom(1));
        string dir = Path.Combine(_dir, "tf");
        Directory.CreateDirectory(dir);
        var tensors = new Dictionary<string, (long[], float[])> { ["model/wte"] = ([50, 16], new float[800]) };
        TfBundleWriter.Write(Path.Combine(dir, "model.ckpt"), tensors);
        File.WriteAllText(Path.Combine(dir, "hparams.json"), """{"n_vocab": 50, "n_ctx": 8, "n_embd": 16, "n_head": 2, "n_layer": 2147483647}""");
        var e = Bounded.Rejects<InvalidDataException>(() => GptModel.Load(dir));
        Assert.Contains("model.ckpt.index", e.Message);
    }

    [Fact]
    public void HalfABillionShardsAllocateNothing()
    {
        string prefix = Path.Combine(_dir, "model.ckpt");
        var entries = new List<(byte[] Key, byte[] Value)>
        {
            ([], TfBundleWriter.Header(500_000_000)),
            ("model/wte"u8.ToArray(), TfBundleWriter.Entry([2], 0, 8, 0)),
        };
        File.WriteAllBytes(prefix + ".index", TfBundleWriter.IndexTable(entries));
        var (error, allocated) = Bounded.Run(() =>
        {
            using var bundle = TensorBundleReader.Open(prefix);
            bundle.CheckDataFiles();
        }, TimeSpan.FromSeconds(10));
        Assert.IsType<FileNotFoundException>(error);
        Assert.True(allocated < 1 << 20, $"allocated {allocated:N0} bytes");
    }

    [Fact]
    public void PrefixSharedLevelDbKeysCannotGoQuadratic()
    {
        // 100k entries, each repeating the whole previous key and adding one byte: ~5 GB of keys from ~500 KB.
        const int n = 100_000;
        var block = new MemoryStream();
        for (int i = 0; i < n; i++)
        {
            WriteVarint(block, (uint)i); WriteVarint(block, 1); WriteVarint(block, 0);
            block.WriteByte((byte)'a');
        }
        block.Write(new byte[4]);               // restart[0] = 0
        block.Write(BitConverter.GetBytes(1));   // one restart
        string prefix = Path.Combine(_dir, "bomb.ckpt");
        File.WriteAllBytes(prefix + ".index", TfBundleWriter.IndexTable(block.ToArray(), "a"u8.ToArray()));
        var e = Bounded.Rejects<InvalidDataException>(() => TensorBundleReader.Open(prefix), maxAllocatedBytes: 200L << 20, seconds: 20);
        Assert.Contains("bomb.ckpt.index", e.Message);
    }

    [Fact]
    public void ASnappyBlockCannotClaimGigabytes()
    {
        var e = Bounded.Rejects<InvalidDataException>(() => Snappy.Decompress([0xff, 0xff, 0xff, 0xff, 0x07, 0x00, 0x61], "x.index"), maxAllocatedBytes: 1 << 20);
        Assert.Contains("x.index", e.Message);
    }

    [Theory]
    [InlineData("/etc/passwd")]
    [InlineData("../outside/model.ckpt")]
    public void TheCheckpointFileMayOnlyNameFilesInItsFolder(string target)
    {
        string dir = Path.Combine(_dir, "folder");
        Directory.CreateDirectory(dir);
        Directory.CreateDirectory(Path.Combine(_dir, "outside"));
        File.WriteAllText(Path.Combine(_dir, "outside", "model.ckpt.index"), "");
        File.WriteAllText("/tmp/gptsharp-hostile-abs.index", "");
        File.WriteAllText(Path.Combine(dir, "checkpoint"), $"model_checkpoint_path: \"{target}\"\n");
        Assert.Equal(Path.Combine(dir, "model.ckpt"), Gpt2TensorFlowImport.FindPrefix(dir));
        File.WriteAllText(Path.Combine(dir, "checkpoint"), "model_checkpoint_path: \"/tmp/gptsharp-hostile-abs\"\n");
        Assert.Equal(Path.Combine(dir, "model.ckpt"), Gpt2TensorFlowImport.FindPrefix(dir));
    }

    [Theory]
    [InlineData(3_000_000, 768, "context_length x emb_dim")]
    [InlineData(256, 100_000, "vocab_size x emb_dim")]
    [InlineData(256, 30_000, "emb_dim x 4 emb_dim")]
    public void ImplausibleModelSettingsAreOneLine(int context, int width, string what)
    {
        var config = GptConfig.Book124M with { ContextLength = context, EmbeddingDim = width, Heads = 8, VocabSize = width == 30_000 ? 100 : 50257 };
        var e = Assert.Throws<ArgumentException>(() => config.Validate());
        Assert.Contains(what, e.Message);
    }

    [Fact]
    public void TrainingMemoryIsComparedWithTheMachine()
    {
        var config = GptConfig.Gpt2XL with { ContextLength = 16384 };
        var e = Assert.Throws<ArgumentException>(() => MemoryBudget.Require(MemoryBudget.TrainingBytes(config, 8), "training gpt2-xl at 16384"));
        Assert.Contains("needs about", e.Message);
        Assert.Contains("available", e.Message);
    }

    [Fact]
    public void ErrorLinesEscapeControlCharactersAndHideTraces()
    {
        Assert.Equal("a\\x1b[2Jb\\nc\\u202e", Printable.Escape("a\u001b[2Jb\nc\u202e"));
        Assert.Equal("x.pth: bad \\x1b]0;pwned\\x07", CliErrors.Describe(new InvalidDataException("x.pth: bad \u001b]0;pwned\u0007")));
        string line = CliErrors.Describe(new OverflowException("Arithmetic operation resulted in an overflow."));
        Assert.StartsWith("internal error (OverflowException)", line);
        Assert.DoesNotContain("\n", line);
    }

    [Fact]
    public void InspectEscapesTensorNamesAndMetadata()
    {
        string path = Path.Combine(_dir, "escape.safetensors");
        CheckpointTestHelpers.WriteRaw(path, "{\"__metadata__\":{\"note\":\"\\u001b[31mred\"},\"evil\\u001b]2;title\\u0007\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", new byte[4]);
        var output = new StringWriter();
        var command = GptSharp.Cli.Commands.InspectCommand.Create(output, plain: true);
        var root = new System.CommandLine.RootCommand { command };
        // One stray tensor: listed in full, but no config can be determined from it.
        Assert.Equal(GptSharp.Cli.Commands.InspectCommand.ConfigUnknownExitCode, root.Parse(["inspect", path]).Invoke());
        Assert.Contains("config: unknown", output.ToString());
        Assert.DoesNotContain('\u001b', output.ToString());
        Assert.Contains("evil\\x1b]2;title\\x07", output.ToString());
        Assert.Contains("\\x1b[31mred", output.ToString());
    }

    [Fact]
    public void TemporaryFilesOfKilledWritersAreRemovedAtTheNextWrite()
    {
        string target = Path.Combine(_dir, "model.safetensors");
        int deadPid = Enumerable.Range(4_000_000, 1000).First(p => !Directory.Exists($"/proc/{p}"));
        string stale = Path.Combine(_dir, $".model.safetensors.{deadPid}-{Guid.NewGuid():N}.tmp");
        string live = Path.Combine(_dir, $".model.safetensors.{Environment.ProcessId}-{Guid.NewGuid():N}.tmp");
        File.WriteAllText(stale, "half");
        File.WriteAllText(live, "writing");
        AtomicFile.Write(target, s => s.WriteByte(1));
        Assert.False(File.Exists(stale));
        Assert.True(File.Exists(live)); // a live process's write is left alone
        Assert.Equal([1], File.ReadAllBytes(target));
    }

    private static void WriteVarint(Stream s, uint v)
    {
        while (v >= 0x80) { s.WriteByte((byte)(v | 0x80)); v >>= 7; }
        s.WriteByte((byte)v);
    }

    private static int FindLast(byte[] haystack, byte[] needle)
    {
        for (int i = haystack.Length - needle.Length; i >= 0; i--)
            if (haystack.AsSpan(i, needle.Length).SequenceEqual(needle)) return i;
        throw new InvalidOperationException("not found");
    }
}
