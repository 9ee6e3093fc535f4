using System.Diagnostics;
using GptSharp.Checkpoints;
using GptSharp.Data;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Training;
using GptSharp.Randomness;

namespace GptSharp.Benchmarks;

/// <summary>
/// What a training run's own I/O costs: one training checkpoint of the book's 124M model (model + AdamW moments, ~1.95 GB,
/// fsynced and renamed as every checkpoint is) written and read back, and the id check of a 1 GB token file
/// (<see cref="TokenFile.CheckIds"/>) at each vector width, from the page cache.
/// Run: dotnet run -c Release --project bench/GptSharp.Benchmarks -- run-io-quick [DIR]
/// </summary>
public static class RunIoBenchmark
{
    public static void Quick(string? directory)
    {
        string dir = Path.Combine(directory ?? Path.GetTempPath(), "gptsharp-run-io-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            Checkpoint(dir);
            TokenScan(dir);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void Checkpoint(string dir)
    {
        var config = new RunConfig { Model = GptConfig.Book124M, Training = new TrainingOptions() };
        var generator = RandomGenerators.Create("torch", 123);
        using var model = new GptModel(config.Model, generator);
        using var optimizer = new AdamW(model.Parameters());
        optimizer.StepCount = 1;
        var state = new TrainerState { GlobalStep = 0 };
        string path = Path.Combine(dir, TrainingCheckpoint.FileNameFor(1));
        for (int round = 0; round < 2; round++)
        {
            var clock = Stopwatch.StartNew();
            TrainingCheckpoint.Save(path, config, model, optimizer, generator, state);
            double write = clock.Elapsed.TotalSeconds;
            long bytes = new FileInfo(path).Length;
            clock.Restart();
            using (TrainingCheckpoint.Load(path)) { }
            double read = clock.Elapsed.TotalSeconds;
            Console.WriteLine($"124M checkpoint ({bytes / 1e9:F2} GB): write {write:F2} s ({bytes / 1e6 / write:F0} MB/s, fsync included), load {read:F2} s");
        }
        // best.safetensors during a run: each new lowest validation loss costs the run an in-memory copy (BestModelWriter).
        var offers = new List<double>();
        using (var best = new BestModelWriter(Path.Combine(dir, "best.safetensors"), model))
        {
            for (int i = 0; i < 6; i++)
            {
                var clock = Stopwatch.StartNew();
                best.Offer();
                offers.Add(clock.Elapsed.TotalMilliseconds);
                Thread.Sleep(1000);
            }
            var flush = Stopwatch.StartNew();
            best.Flush();
            Console.WriteLine($"best.safetensors: offers {string.Join(" / ", offers.Select(ms => ms.ToString("F0")))} ms (the first allocates the copy), then {flush.Elapsed.TotalSeconds:F2} s until the last write was on disk");
        }
        // The end of a run: the last checkpoint and model.safetensors, one after the other and side by side (as TrainingRun does).
        string modelPath = Path.Combine(dir, RunDirectory.ModelFile);
        for (int round = 0; round < 2; round++)
        {
            var clock = Stopwatch.StartNew();
            TrainingCheckpoint.Save(path, config, model, optimizer, generator, state);
            model.Save(modelPath);
            double inTurn = clock.Elapsed.TotalSeconds;
            Thread.Sleep(5000);
            clock.Restart();
            var modelWrite = Task.Run(() => model.Save(modelPath));
            TrainingCheckpoint.Save(path, config, model, optimizer, generator, state);
            modelWrite.Wait();
            double sideBySide = clock.Elapsed.TotalSeconds;
            long bytes = new FileInfo(path).Length + new FileInfo(modelPath).Length;
            Console.WriteLine($"end of a run, checkpoint + model.safetensors ({bytes / 1e9:F2} GB): one after the other {inTurn:F2} s, side by side {sideBySide:F2} s");
            Thread.Sleep(5000);
        }
    }

    private static void TokenScan(string dir)
    {
        const long Ids = 512L << 20; // 1 GiB of uint16 ids
        string path = Path.Combine(dir, "tokens.bin");
        var random = new Random(1);
        var chunk = new int[1 << 20];
        TokenFile.Write(path, Enumerable.Range(0, (int)(Ids / chunk.Length)).Select(i => $"chunk{i}").ToList(), _ => "",
            _ => { for (int i = 0; i < chunk.Length; i++) chunk[i] = random.Next(50257); return chunk; }, 50257, 50256);
        using var file = TokenFile.Open(path);
        double megabytes = file.Count * 2 / 1e6;
        foreach (int bits in new[] { 512, 256, 0 })
        {
            file.FindIdAtLeast(50257, bits); // page the file in
            double seconds = double.MaxValue;
            long found = 0;
            for (int round = 0; round < 5; round++) // the best of five: the machine may be shared
            {
                var clock = Stopwatch.StartNew();
                found = file.FindIdAtLeast(50257, bits);
                seconds = Math.Min(seconds, clock.Elapsed.TotalSeconds);
            }
            Console.WriteLine($"token-file id check, {(bits == 0 ? "scalar" : $"Vector{bits}")}: {megabytes:F0} MB in {seconds * 1000:F0} ms = {megabytes / seconds:F0} MB/s (found {found})");
        }
    }
}
