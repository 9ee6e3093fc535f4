using GptSharp.Checkpoints;
using GptSharp.Data;
using GptSharp.Formats;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tests.Checkpoints.TensorFlow;
using SharpFuzz;
using GptSharp.Formats.TensorFlow;
using GptSharp.Formats.PyTorch;
using GptSharp.Randomness;

namespace GptSharp.Fuzz;

/// <summary>
/// AFL++ targets over the file parsers (one per format), run with SharpFuzz's out-of-process loop. A target may
/// succeed or throw one of our format exceptions; anything else (another exception, a stack overflow, a hang
/// caught by afl-fuzz -t) is a crash AFL++ keeps. `seeds DIR` writes a valid file per format with the project's writers.
/// </summary>
public static class Program
{
    // A property, not a field: instrumented code may only run inside the fuzzer loop, not in a static constructor.
    private static GptConfig Tiny => new() { VocabSize = 8, ContextLength = 4, EmbeddingDim = 4, Heads = 1, Layers = 1, DropRate = 0f, QkvBias = true };

    private static readonly Dictionary<string, Action<byte[], string>> Targets = new()
    {
        ["pth"] = (bytes, scratch) =>
        {
            string path = WriteScratch(bytes, scratch, ".pth");
            using var file = PthFile.Open(path);
            var sd = file.StateDict();
            foreach (var t in sd.Tensors)
                if (t.DType.IsConvertibleToFloat() && t.ElementCount < 1 << 20) sd.ReadInto(t.Name, new float[t.ElementCount]);
            GptModel.Load(path, new LoadOptions { Config = Tiny }).Dispose();
        },
        ["safetensors"] = (bytes, scratch) =>
        {
            string path = WriteScratch(bytes, scratch, ".safetensors");
            ModelFileInfo.Read(path);
            GptModel.Load(path).Dispose();
        },
        ["gguf"] = (bytes, scratch) =>
        {
            string path = WriteScratch(bytes, scratch, ".gguf");
            ModelFileInfo.Read(path);
            GptModel.Load(path).Dispose();
        },
        ["tf-index"] = (bytes, _) =>
        {
            using var bundle = TensorBundleReader.Parse("/nonexistent/model.ckpt", bytes);
            long total = 0;
            foreach (var e in bundle.Entries) total += e.ElementCount;
        },
        ["snappy"] = (bytes, _) => { Snappy.Decompress(bytes, "fuzz"); },
        ["config"] = (bytes, _) => { GptConfig.FromJson(System.Text.Encoding.UTF8.GetString(bytes), "config.json"); },
        ["tokens"] = (bytes, scratch) =>
        {
            using var file = TokenFile.Open(WriteScratch(bytes, scratch, ".tokens"));
            file.CopyTo(0, new int[Math.Min(file.Count, 1 << 16)]);
        },
        // llm.c shards and nanoGPT's bare ids (and GptSharp's own), as `train --data x.bin` opens them: header, length, ids.
        ["token-shard"] = (bytes, scratch) =>
        {
            using var shard = TokenShard.Open(WriteScratch(bytes, scratch, ".bin"));
            shard.CheckIds(50257);
            shard.CopyTo(0, new int[Math.Min(shard.Count, 1 << 16)]);
        },
        ["jsonl"] = (bytes, scratch) => { TextCorpus.ReadCorpus([WriteScratch(bytes, scratch, ".jsonl")]); },
        ["parquet"] = (bytes, scratch) => { TextCorpus.ReadCorpus([WriteScratch(bytes, scratch, ".parquet")]); },
    };

    public static int Main(string[] args)
    {
        if (args.Length == 2 && args[0] == "seeds") return WriteSeeds(args[1]);
        if (args.Length < 1 || !Targets.TryGetValue(args[0], out var target))
        {
            Console.Error.WriteLine($"usage: GptSharp.Fuzz <{string.Join("|", Targets.Keys)}> | seeds DIR");
            return 2;
        }
        // One scratch file per fuzzer process (AFL++ may run several in parallel), in memory where possible.
        string scratch = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), $"gptsharp-fuzz-{Environment.ProcessId}");
        Fuzzer.OutOfProcess.Run(stream =>
        {
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            try
            {
                target(memory.ToArray(), scratch);
            }
            catch (Exception e) when (e is InvalidDataException or NotSupportedException or FileNotFoundException)
            {
                // a clean format error: the expected outcome for a bad file
            }
        });
        return 0;
    }

    private static string WriteScratch(byte[] bytes, string scratch, string extension)
    {
        string path = scratch + extension;
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static int WriteSeeds(string dir)
    {
        foreach (string name in Targets.Keys) Directory.CreateDirectory(Path.Combine(dir, name));
        using (var model = new GptModel(Tiny, new FastRandom(1)))
        {
            model.Save(Path.Combine(dir, "pth", "model.pth"));
            model.Save(Path.Combine(dir, "safetensors", "model.safetensors"));
            model.Export(Path.Combine(dir, "gguf", "model.gguf"), new ExportOptions(ModelFileFormat.Gguf));
        }
        string prefix = Path.Combine(Path.GetTempPath(), $"gptsharp-fuzz-seed-{Environment.ProcessId}");
        TfBundleWriter.Write(prefix, new Dictionary<string, (long[], float[])>
        {
            ["model/wte"] = ([8, 4], new float[32]),
            ["model/wpe"] = ([4, 4], new float[16]),
            ["model/h0/attn/c_attn/w"] = ([1, 4, 12], new float[48]),
        }, blockSize: 64, restartInterval: 2);
        File.Move(prefix + ".index", Path.Combine(dir, "tf-index", "model.ckpt.index"), overwrite: true);
        File.Delete(prefix + ".data-00000-of-00001");
        File.WriteAllBytes(Path.Combine(dir, "snappy", "block.snappy"), [79, 0x0c, 97, 98, 99, 100, 0x0d, 4, 0x3e, 8, 0, 0x5f, 16, 0, 0, 0, 0x15, 1, 0x48, .. "hello, snappy world"u8]);
        File.WriteAllText(Path.Combine(dir, "config", "config.json"), Tiny.ToJson());
        TokenFile.Write(Path.Combine(dir, "tokens", "data.tokens"), ["a", "b"], d => d == 0 ? "first" : "second", s => s.Select(c => c % 50).ToArray(), 50, 49);
        string corpus = Path.Combine(Path.GetTempPath(), $"gptsharp-fuzz-corpus-{Environment.ProcessId}");
        Directory.CreateDirectory(corpus);
        File.WriteAllText(Path.Combine(corpus, "docs.jsonl"), "{\"id\":1,\"text\":\"first \\\"doc\\\"\\n\"}\n{\"text\":null}\n{\"meta\":[1,{\"a\":2}],\"text\":\"caf\u00e9\"}\n");
        File.Copy(Path.Combine(corpus, "docs.jsonl"), Path.Combine(dir, "jsonl", "docs.jsonl"), overwrite: true);
        CorpusPreparation.Prepare([Path.Combine(corpus, "docs.jsonl")], Path.Combine(dir, "token-shard", "seed"), new PreparationOptions { Format = PreparedFormat.Llmc, ShardTokens = 8 });
        File.WriteAllBytes(Path.Combine(dir, "token-shard", "nanogpt.bin"), [1, 0, 2, 0, 0xfe, 0xc3]);
        WriteParquet(Path.Combine(dir, "parquet", "docs.parquet"));
        Directory.Delete(corpus, recursive: true);
        Console.WriteLine($"seeds written under {dir}");
        return 0;
    }

    private static void WriteParquet(string path)
    {
        var text = new Parquet.Schema.DataField<string>("text");
        using var file = File.Create(path);
        var writer = Parquet.ParquetWriter.CreateAsync(new Parquet.Schema.ParquetSchema(text), file).GetAwaiter().GetResult();
        using (var group = writer.CreateRowGroup()) group.WriteAsync(text, ["first doc", null!, "café"], null).GetAwaiter().GetResult();
        writer.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }
}
