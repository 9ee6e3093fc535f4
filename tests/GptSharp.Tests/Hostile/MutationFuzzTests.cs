using System.Diagnostics;
using GptSharp.Checkpoints;
using GptSharp.Data;
using GptSharp.Formats;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tests.Checkpoints.TensorFlow;
using GptSharp.Formats.SafeTensors;
using GptSharp.Formats.TensorFlow;
using GptSharp.Formats.PyTorch;
using GptSharp.Randomness;

namespace GptSharp.Tests.Hostile;

/// <summary>
/// A deterministic mutation fuzzer over every file format we parse: valid files written by the project's own
/// writers, then 10,000 seeded mutations each (bit flips, bytes and length fields set to extremes, truncations,
/// duplicated, deleted and swapped chunks). Each case must load or fail with our own format exception, within
/// a per-case time limit and a bound on what it allocates. A failure names the format and seed to replay it.
/// </summary>
[Collection(nameof(MutationFuzzCollection))]
public sealed class MutationFuzzTests : IDisposable
{
    private const int Cases = 10_000;
    private static readonly TimeSpan CaseLimit = TimeSpan.FromSeconds(2);
    private static readonly GptConfig Tiny = new() { VocabSize = 8, ContextLength = 4, EmbeddingDim = 4, Heads = 1, Layers = 1, DropRate = 0f, QkvBias = true };

    private readonly string _dir = Directory.CreateTempSubdirectory("gptsharp-fuzz-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void PthZipAndPickle()
    {
        string seedPath = Path.Combine(_dir, "seed.pth");
        using (var model = new GptModel(Tiny, new FastRandom(1))) PthModelFile.SaveModel(model, seedPath);
        string path = Path.Combine(_dir, "case.pth");
        Fuzz("pth", File.ReadAllBytes(seedPath), bytes =>
        {
            File.WriteAllBytes(path, bytes);
            using var file = PthFile.Open(path);
            var sd = file.StateDict();
            foreach (var t in sd.Tensors)
                if (t.DType.IsConvertibleToFloat()) sd.ReadInto(t.Name, new float[t.ElementCount]);
            GptModel.Load(path, new LoadOptions { Config = Tiny }).Dispose(); // emb_dim 4 does not imply a head count: the config is given
        });
    }

    [Fact]
    public void SafeTensors()
    {
        string seedPath = Path.Combine(_dir, "seed.safetensors");
        using (var model = new GptModel(Tiny, new FastRandom(2))) model.Save(seedPath);
        string path = Path.Combine(_dir, "case.safetensors");
        Fuzz("safetensors", File.ReadAllBytes(seedPath), bytes =>
        {
            File.WriteAllBytes(path, bytes);
            using (var file = SafeTensorsFile.Open(path))
                foreach (var t in file.Tensors)
                    if (t.DType.IsConvertibleToFloat()) file.ReadInto(t.Name, new float[t.ElementCount]);
            ModelFileInfo.Read(path);
            GptModel.Load(path).Dispose();
        });
    }

    [Fact]
    public void Gguf()
    {
        string seedPath = Path.Combine(_dir, "seed.gguf");
        using (var model = new GptModel(Tiny, new FastRandom(3))) model.Export(seedPath, new ExportOptions(ModelFileFormat.Gguf) { DType = ExportDType.Q8_0 });
        string path = Path.Combine(_dir, "case.gguf");
        Fuzz("gguf", File.ReadAllBytes(seedPath), bytes =>
        {
            File.WriteAllBytes(path, bytes);
            ModelFileInfo.Read(path);
            GptModel.Load(path).Dispose();
            GptModel.Load(path, new LoadOptions { Quantization = WeightQuantization.Int8 }).Dispose();
        });
    }

    [Fact]
    public void TensorFlowIndexLevelDbAndProtobuf()
    {
        string prefix = Path.Combine(_dir, "model.ckpt");
        var tensors = new Dictionary<string, (long[], float[])>
        {
            ["model/wte"] = ([8, 4], Enumerable.Range(0, 32).Select(i => (float)i).ToArray()),
            ["model/wpe"] = ([4, 4], new float[16]),
            ["model/h0/attn/c_attn/w"] = ([1, 4, 12], new float[48]),
            ["model/ln_f/g"] = ([4], [1, 1, 1, 1]),
        };
        TfBundleWriter.Write(prefix, tensors, blockSize: 64, snappy: false, restartInterval: 2);
        Fuzz("tf-index", File.ReadAllBytes(prefix + ".index"), bytes =>
        {
            using var bundle = TensorBundleReader.Parse(prefix, bytes);
            bundle.CheckDataFiles();
            foreach (var e in bundle.Entries)
                if (e.DType == TfDataType.Float && !e.IsSliced) bundle.ReadFloat32(e, new float[e.ElementCount]);
        });
    }

    [Fact]
    public void SnappyBlocks()
    {
        // Literals, then copies with 1-, 2- and 4-byte offsets (overlapping ones repeat a pattern).
        byte[] seed = [60 + 19, 0x0c, (byte)'a', (byte)'b', (byte)'c', (byte)'d', 0x01 | (3 << 2), 4, 0x02 | (15 << 2), 8, 0, 0x03 | (23 << 2), 16, 0, 0, 0, 0x01 | (5 << 2), 1];
        seed = [.. seed, .. TfBundleWriter.SnappyLiterals("hello, snappy world"u8.ToArray())[1..]];
        Assert.Equal(79, Snappy.Decompress(seed, "seed").Length);
        Fuzz("snappy", seed, bytes => Snappy.Decompress(bytes, "x"));
    }

    [Fact]
    public void ConfigJson()
    {
        byte[] seed = System.Text.Encoding.UTF8.GetBytes((Tiny with { Layers = 2 }).ToJson());
        Fuzz("config-json", seed, bytes =>
        {
            var config = GptConfig.FromJson(System.Text.Encoding.UTF8.GetString(bytes), "config.json");
            MemoryBudget.ModelBytes(config);
        });
    }

    [Fact]
    public void TokenFiles()
    {
        string seedPath = Path.Combine(_dir, "seed.tokens");
        TokenFile.Write(seedPath, ["a", "b"], d => d == 0 ? "first" : "second", s => s.Select(c => (int)c % 50).ToArray(), 50, 49);
        string path = Path.Combine(_dir, "case.tokens");
        Fuzz("tokens", File.ReadAllBytes(seedPath), bytes =>
        {
            File.WriteAllBytes(path, bytes);
            using var file = TokenFile.Open(path);
            var ids = new int[Math.Min(file.Count, 1 << 16)];
            file.CopyTo(0, ids);
        });
    }

    [Fact]
    public void LlmcShardsAndNanoGptBins()
    {
        string text = Path.Combine(_dir, "docs.jsonl");
        File.WriteAllText(text, "{\"text\":\"first document\"}\n{\"text\":\"second\"}\n");
        var shards = CorpusPreparation.Prepare([text], Path.Combine(_dir, "seed"), new PreparationOptions { Format = PreparedFormat.Llmc, ShardTokens = 4 }).Outputs;
        string path = Path.Combine(_dir, "case.bin");
        Fuzz("llmc-shard", File.ReadAllBytes(shards[0]), bytes =>
        {
            File.WriteAllBytes(path, bytes);
            using var shard = TokenShard.Open(path);
            shard.CheckIds(50257);
            shard.CopyTo(0, new int[Math.Min(shard.Count, 1 << 16)]);
        });
    }

    [Fact]
    public async Task JsonLinesAndParquetCorpora()
    {
        string jsonl = Path.Combine(_dir, "seed.jsonl");
        File.WriteAllText(jsonl, "{\"id\":1,\"text\":\"first \\\"doc\\\"\\n\"}\n{\"text\":null}\n{\"meta\":[1,{\"a\":2}],\"text\":\"caf\u00e9\"}\n");
        string path = Path.Combine(_dir, "case.jsonl");
        Fuzz("jsonl", File.ReadAllBytes(jsonl), bytes =>
        {
            File.WriteAllBytes(path, bytes);
            TextCorpus.ReadCorpus([path]);
        }, cases: 1_000); // a corpus read starts the streaming reader and its workers per case: the AFL++ target (fuzz/) is for long runs
        string parquet = Path.Combine(_dir, "seed.parquet");
        var field = new Parquet.Schema.DataField<string>("text");
        using (var file = File.Create(parquet))
        {
            var writer = await Parquet.ParquetWriter.CreateAsync(new Parquet.Schema.ParquetSchema(field), file);
            using (var group = writer.CreateRowGroup()) await group.WriteAsync(field, ["first doc", null!, "café"], null);
            await writer.DisposeAsync();
        }
        path = Path.Combine(_dir, "case.parquet");
        Fuzz("parquet", File.ReadAllBytes(parquet), bytes =>
        {
            File.WriteAllBytes(path, bytes);
            TextCorpus.ReadCorpus([path]);
        }, cases: 200); // Parquet.Net takes tens of ms a case here: the AFL++ target (fuzz/) is for long runs
    }

    /// <summary>Runs <paramref name="parse"/> on <paramref name="cases"/> (default <see cref="Cases"/>) mutations of <paramref name="seed"/> (case 0: the seed itself, which must load).</summary>
    private static void Fuzz(string format, byte[] seed, Action<byte[]> parse, int cases = Cases)
    {
        var clock = new Stopwatch();
        for (int seedNumber = 0; seedNumber < cases; seedNumber++)
        {
            byte[] input = seedNumber == 0 ? seed : Mutate(seed, new Random(seedNumber));
            long before = GC.GetAllocatedBytesForCurrentThread();
            clock.Restart();
            Exception? error = null;
            try { parse(input); }
            catch (Exception e) { error = e; }
            clock.Stop();
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            string replay = $"{format} case {seedNumber} ({input.Length} bytes)";
            if (seedNumber == 0 && error is not null) throw new Xunit.Sdk.XunitException($"{replay}: the unmutated seed fails: {error}");
            if (error is not null && !IsOurFormatError(error))
                throw new Xunit.Sdk.XunitException($"{replay}: {error.GetType().Name} is not a format error: {error}");
            if (clock.Elapsed > CaseLimit) throw new Xunit.Sdk.XunitException($"{replay}: took {clock.Elapsed.TotalSeconds:0.00} s");
            long allowed = (16L << 20) + 64L * seed.Length;
            if (allocated > allowed) throw new Xunit.Sdk.XunitException($"{replay}: allocated {allocated:N0} bytes (limit {allowed:N0})");
        }
    }

    /// <summary>What a bad file may raise: our format error (InvalidDataException, with FileNotFoundException for a missing
    /// part of it) or NotSupportedException for a valid file using a feature we don't read.</summary>
    private static bool IsOurFormatError(Exception e) => e is InvalidDataException or NotSupportedException or FileNotFoundException;

    private static readonly long[] Extremes = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, int.MaxValue, uint.MaxValue, long.MaxValue, long.MinValue, 1L << 31, 1L << 32];

    private static byte[] Mutate(byte[] seed, Random rng)
    {
        var bytes = new List<byte>(seed);
        int steps = 1 + rng.Next(3);
        for (int s = 0; s < steps && bytes.Count > 0; s++)
        {
            int at = rng.Next(bytes.Count);
            switch (rng.Next(8))
            {
                case 0: // bit flip
                    bytes[at] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1: // a byte to an extreme
                    bytes[at] = (byte)(rng.Next(4) switch { 0 => 0, 1 => 0xFF, 2 => 0x7F, _ => 0x80 });
                    break;
                case 2: // a 2/4/8-byte little-endian field to an extreme (lengths, offsets, counts)
                {
                    int width = 2 << rng.Next(3);
                    long value = Extremes[rng.Next(Extremes.Length)];
                    for (int i = 0; i < width && at + i < bytes.Count; i++) bytes[at + i] = (byte)(value >> (8 * i));
                    break;
                }
                case 3: // truncation
                    bytes.RemoveRange(at, bytes.Count - at);
                    break;
                case 4: // duplicate a chunk (a repeated record)
                {
                    int length = Math.Min(1 + rng.Next(64), bytes.Count - at);
                    bytes.InsertRange(at, bytes.GetRange(at, length));
                    break;
                }
                case 5: // delete a chunk
                    bytes.RemoveRange(at, Math.Min(1 + rng.Next(64), bytes.Count - at));
                    break;
                case 6: // swap two chunks (reordered records)
                {
                    int length = 1 + rng.Next(32);
                    int other = rng.Next(bytes.Count);
                    if (at + length > bytes.Count || other + length > bytes.Count) break;
                    var a = bytes.GetRange(at, length);
                    var b = bytes.GetRange(other, length);
                    for (int i = 0; i < length; i++) { bytes[other + i] = a[i]; }
                    for (int i = 0; i < length; i++) { bytes[at + i] = b[i]; }
                    break;
                }
                default: // a varint-sized jump: a byte with the continuation bit set (protobuf, LevelDB, Snappy)
                    bytes[at] |= 0x80;
                    break;
            }
        }
        return bytes.ToArray();
    }
}

/// <summary>The fuzz cases run alone: each has a per-case time limit, which a machine busy with the rest of the suite
/// (thread-pool starvation included) would turn into a false failure.</summary>
[CollectionDefinition(nameof(MutationFuzzCollection), DisableParallelization = true)]
public sealed class MutationFuzzCollection;
