using System.Diagnostics;
using System.Runtime.Intrinsics;
using GptSharp.Checkpoints;
using GptSharp.Formats.Onnx;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Benchmarks;

/// <summary>
/// Export and import of the GPT-2 124M shape (OpenAI's: context 1024, qkv biases, tied head) against the bar the issue
/// sets: each well under the time of reading the model's own safetensors twice. Rounds interleave the cases, so a
/// machine shared with other work slows them alike; medians are printed. Files go to DIR (default: the temp folder).
/// Run: dotnet run -c Release --project bench/GptSharp.Benchmarks -- export-quick [DIR] [rounds]
/// </summary>
public static class ExportBenchmark
{
    public static void Quick(string? directory, int rounds)
    {
        Console.WriteLine($"CPU: {Environment.ProcessorCount} logical cores, vectors {(Vector512.IsHardwareAccelerated ? "AVX-512" : "AVX2")}; {rounds} interleaved rounds, medians");
        string dir = Path.Combine(directory ?? Path.GetTempPath(), "gptsharp-export-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var config = GptConfig.Gpt2Small with { QkvBias = true };
            using var model = new GptModel(config, new FastRandom(124));
            model.TieOutHeadToTokenEmbedding();
            string own = Path.Combine(dir, "model.safetensors"), hf = Path.Combine(dir, "hf"), onnx = Path.Combine(dir, "model.onnx");
            var times = new Dictionary<string, List<double>>();
            void Time(string name, Action action)
            {
                var clock = Stopwatch.StartNew();
                action();
                (times.TryGetValue(name, out var list) ? list : times[name] = []).Add(clock.Elapsed.TotalSeconds);
            }
            for (int round = 0; round < rounds; round++)
            {
                Time("GptSharp model file: save", () => model.Save(own));
                Time("GptSharp model file: load twice (the bar)", () =>
                {
                    GptModel.Load(own).Dispose();
                    GptModel.Load(own).Dispose();
                });
                Time("Hugging Face folder: export", () => model.Export(hf, new ExportOptions(ModelFileFormat.HuggingFace)));
                Time("Hugging Face folder: import", () => GptModel.Load(hf).Dispose());
                Time("onnx/model.onnx: message only (no file)", () => Gpt2OnnxDecoder.Build(model, null, null));
                Time("onnx/model.onnx: export (graph alone)", () => Gpt2OnnxDecoder.Write(model, onnx));
            }
            foreach (var (name, list) in times)
                Console.WriteLine($"{name,-44} {Median(list),7:F2} s   (runs: {string.Join(", ", list.Select(t => t.ToString("F2")))})");
            Console.WriteLine($"sizes: model.safetensors {Mb(own)} MB; HF folder {Mb(hf)} MB ({Mb(Path.Combine(hf, "model.safetensors"))} MB weights); model.onnx {Mb(onnx)} MB");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static string Mb(string path) =>
        ((Directory.Exists(path) ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length) : new FileInfo(path).Length) / 1e6).ToString("F1");
}
