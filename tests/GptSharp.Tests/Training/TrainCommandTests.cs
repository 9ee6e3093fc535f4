using System.Xml.Linq;
using GptSharp.Checkpoints;
using GptSharp.Cli;
using GptSharp.Cli.Commands;
using GptSharp.Data;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;
using GptSharp.Training;
using GptSharp.Randomness;

namespace GptSharp.Tests.Training;

[Collection(nameof(GptSharp.Tests.Checkpoints.ConsoleErrorCollection))] // EvalUsesTheBooksLoaders... captures Console.Out
public sealed class TrainCommandTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-cli-" + Guid.NewGuid().ToString("N"));

    public TrainCommandTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void DefaultsAreTheBooksRun()
    {
        var s = TrainCommand.Parse();
        Assert.Equal(GptConfig.Book124M, s.Config.Model);
        Assert.Equal(256, s.Config.Model.ContextLength);
        Assert.Equal(2, s.Config.BatchSize);
        Assert.Equal(256, s.Config.Stride);
        Assert.Equal(4e-4, s.Config.LearningRate);
        Assert.Equal(0.1, s.Config.WeightDecay);
        Assert.Equal(123UL, s.Config.Seed);
        Assert.Equal("torch", s.Config.Rng);
        Assert.Equal("", s.Config.Data);
        Assert.Equal(new TrainingOptions(), s.Config.Training);
        Assert.Equal("Every effort moves you", s.Config.Training.StartContext);
        Assert.Null(s.Resume);
        Assert.Null(s.EpochsOverride);
    }

    [Fact]
    public void EveryOptionParses()
    {
        var s = TrainCommand.Parse("--data", "corpus", "--config", "gpt2-medium", "--context-length", "64", "--emb-dim", "128", "--layers", "3",
            "--heads", "8", "--drop-rate", "0", "--qkv-bias", "true", "--batch-size", "4", "--stride", "32", "--epochs", "2", "--max-steps", "50",
            "--lr", "1e-3", "--weight-decay", "0.01", "--eval-freq", "10", "--eval-iter", "2", "--seed", "7", "--start-context", "Hello",
            "--warmup-steps", "5", "--min-lr", "1e-5", "--grad-clip", "1", "--grad-accum", "4", "--threads", "1", "--out", "runs/x", "--rng", "fast");
        Assert.Equal(GptConfig.Gpt2Medium with { ContextLength = 64, EmbeddingDim = 128, Layers = 3, Heads = 8, DropRate = 0, QkvBias = true }, s.Config.Model);
        Assert.Equal(Path.GetFullPath("corpus"), s.Config.Data);
        Assert.Equal((4, 32, 1e-3, 0.01, 7UL, "fast"), (s.Config.BatchSize, s.Config.Stride, s.Config.LearningRate, s.Config.WeightDecay, s.Config.Seed, s.Config.Rng));
        Assert.Equal(new TrainingOptions
        {
            Epochs = 2, MaxSteps = 50, EvalFreq = 10, EvalIter = 2, StartContext = "Hello", WarmupSteps = 5, MinLr = 1e-5, GradClip = 1, GradAccum = 4,
        }, s.Config.Training);
        Assert.Equal((1, "runs/x", 2, 50L), (s.Threads!.Value, s.Out, s.EpochsOverride!.Value, s.MaxStepsOverride!.Value));
    }

    [Fact]
    public void BadOptionsAreOneLineErrors()
    {
        Assert.Contains("--batch-size", Assert.Throws<ArgumentException>(() => TrainCommand.Parse("--batch-size", "0")).Message);
        Assert.Contains("n_heads", Assert.Throws<ArgumentException>(() => TrainCommand.Parse("--heads", "5")).Message);
        Assert.Contains("--config", Assert.Throws<ArgumentException>(() => TrainCommand.Parse("--config", "no-such-preset")).Message);
        Assert.Throws<ArgumentException>(() => TrainCommand.Parse("--rng", "mt"));
        Assert.Contains("--grad-accum", Assert.Throws<ArgumentException>(() => TrainCommand.Parse("--grad-accum", "0")).Message);
    }

    [Fact]
    public void ConfigJsonFileIsRead()
    {
        string path = Path.Combine(_dir, "tiny.json");
        File.WriteAllText(path, """{"vocab_size": 50257, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0, "qkv_bias": false}""");
        var s = TrainCommand.Parse("--config", path);
        Assert.Equal(new GptConfig { ContextLength = 16, EmbeddingDim = 32, Heads = 4, Layers = 2, DropRate = 0 }, s.Config.Model);
    }

    private static int Cli(params string[] args) => Program.BuildRootCommand().Parse(args).Invoke();

    [Fact]
    public void EvalTakesAnOpenAiGpt2FolderLikeGenerate()
    {
        // Exercise 5.5's `gptsharp eval --model gpt2-small` resolves a cached OpenAI folder; the same loader serves
        // --model DIR and --model-dir DIR, which this checks with a tiny checkpoint in OpenAI's names and layout.
        var config = new GptConfig { VocabSize = 50257, ContextLength = 8, EmbeddingDim = 4, Heads = 1, Layers = 1, QkvBias = true };
        using var source = new GptModel(config, new FastRandom(5));
        string folder = GptSharp.Tests.Checkpoints.TensorFlow.Gpt2TensorFlowImportTests.WriteOpenAiCheckpoint(source, 262144, false);
        try
        {
            Assert.Equal(0, Cli("eval", "--model-dir", folder, "--batches", "2"));
            Assert.Equal(0, Cli("eval", "--model", folder, "--batches", "1", "--context-length", "4"));
            Assert.Equal(1, Cli("eval", "--batches", "1"));                                  // no model named
            Assert.Equal(1, Cli("eval", "--model", folder, "--model-dir", folder));          // two models named
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void TinyRunWritesTheRunDirectoryAndResumes()
    {
        string run = Path.Combine(_dir, "run");
        string[] tiny = ["--context-length", "12", "--emb-dim", "32", "--layers", "2", "--heads", "4", "--eval-freq", "2", "--eval-iter", "1", "--out", run];
        Assert.Equal(0, Cli(["train", .. tiny, "--max-steps", "4"]));
        foreach (var file in new[] { "config.json", "metrics.csv", "samples.txt", "loss.svg", "perplexity.svg", "report.html", "model.safetensors", TrainingCheckpoint.FileNameFor(4) })
            Assert.True(File.Exists(Path.Combine(run, file)), file);
        Assert.Equal(3, File.ReadAllLines(Path.Combine(run, "metrics.csv")).Length); // header + steps 0 and 2
        XDocument.Parse(File.ReadAllText(Path.Combine(run, "loss.svg")));
        Assert.Contains("<svg", File.ReadAllText(Path.Combine(run, "report.html")));

        Assert.Equal(0, Cli("train", "--resume", run, "--max-steps", "7"));
        var metrics = File.ReadAllLines(Path.Combine(run, "metrics.csv"));
        Assert.Equal(["step", "0", "2", "4", "6"], metrics.Select(l => l.Split(',')[0]));
        var contents = TrainingCheckpoint.ReadContents(Path.Combine(run, TrainingCheckpoint.FileNameFor(7)));
        Assert.Equal(6, contents.State.GlobalStep);
        Assert.Equal(7 * 2 * 12, contents.State.TokensSeen);
        Assert.Equal(TrainingCheckpoint.Latest(run), Path.Combine(run, TrainingCheckpoint.FileNameFor(7)));

        Assert.Equal(0, Cli("eval", "--model", Path.Combine(run, "model.safetensors"), "--batches", "2"));
    }

    [Fact]
    public void InitFromTakesTheModelShapeFromTheWeights()
    {
        string weights = Path.Combine(_dir, "w.safetensors");
        var config = GptConfig.Book124M with { ContextLength = 40, EmbeddingDim = 8, Heads = 2, Layers = 1, QkvBias = true };
        using (var source = new GptModel(config, new FastRandom(1)))
            source.Save(weights);
        var s = TrainCommand.Parse("--init-from", weights, "--context-length", "12");
        Assert.Equal(config with { ContextLength = 12 }, s.Config.Model);
        Assert.Equal((weights, 12), (s.Config.InitFrom, s.Config.Stride));
        Assert.Equal(config with { DropRate = 0.1f }, TrainCommand.Parse("--init-from", weights).Config.Model);
        Assert.Contains("--emb-dim", Assert.Throws<ArgumentException>(() => TrainCommand.Parse("--init-from", weights, "--emb-dim", "16")).Message);
        Assert.Contains("--resume", Assert.Throws<ArgumentException>(() => TrainCommand.Parse("--init-from", weights, "--resume", _dir)).Message);

        string run = Path.Combine(_dir, "init");
        Assert.Equal(0, Cli("train", "--init-from", weights, "--context-length", "12", "--max-steps", "2", "--eval-freq", "1", "--eval-iter", "1", "--out", run));
        Assert.Equal(1, Cli("train", "--resume", Path.Combine(run, RunDirectory.ModelFile))); // a model file: --init-from, not --resume
        Assert.Equal(0, Cli("train", "--init-from", run, "--max-steps", "1", "--out", Path.Combine(_dir, "again")));
    }

    [Fact]
    public void EvalUsesTheBooksLoadersForAContext1024Model()
    {
        // Exercise 5.5: GPT-2's 1024-token window, evaluated with chapter 5's loaders (256/256, batch 2) on The Verdict,
        // whose 534 validation tokens would not fill one 1024-token window.
        string weights = Path.Combine(_dir, "ctx1024.safetensors");
        using (var source = new GptModel(GptConfig.Book124M with { ContextLength = 1024, EmbeddingDim = 4, Heads = 1, Layers = 1 }, new FastRandom(2)))
            source.Save(weights);
        var output = new StringWriter();
        var previous = Console.Out;
        Console.SetOut(output);
        try
        {
            Assert.Equal(0, Cli("eval", "--model", weights));
        }
        finally
        {
            Console.SetOut(previous);
        }
        string text = output.ToString();
        Assert.Contains("Training loss: ", text);
        Assert.Contains("(9 batches)", text);   // 4,608 training tokens: 18 windows of 256
        Assert.Contains("(1 batches)", text);   // 534 validation tokens: 2 windows of 256
        Assert.DoesNotContain("NaN", text);
    }

    [Fact]
    public void PrepareWritesATokenFileThatTrainingDataReadsMapped()
    {
        string corpus = Path.Combine(_dir, "corpus");
        Directory.CreateDirectory(corpus);
        string verdict = TextCorpus.TheVerdict();
        File.WriteAllText(Path.Combine(corpus, "a.txt"), verdict[..10000]);
        File.WriteAllText(Path.Combine(corpus, "b.txt"), verdict[10000..]);
        string tokens = Path.Combine(_dir, "tokens.bin");
        Assert.Equal(0, Cli("prepare", "--data", corpus, "--out", tokens));

        var tokenizer = Gpt2Tokenizer.Instance;
        int[] expected = tokenizer.Encode(verdict[..10000] + "<|endoftext|>" + verdict[10000..], Gpt2Tokenizer.AllSpecialTokens);
        using var data = TrainingData.Load(tokens, 0.9, tokenizer);
        Assert.Equal(expected.Length, data.Train.Count + data.Validation.Count);
        var all = new int[data.Train.Count];
        data.Train.CopyTo(0, all);
        Assert.Equal(expected[..all.Length], all);
        Assert.Contains("token file", data.Description);
        Assert.Contains(50256, all);
    }

    [Fact]
    public void MissingDataIsAnError()
    {
        Assert.Equal(1, Cli("train", "--data", Path.Combine(_dir, "nope.txt"), "--out", Path.Combine(_dir, "r")));
        string small = Path.Combine(_dir, "small.txt");
        File.WriteAllText(small, "Too short to train on.");
        Assert.Equal(1, Cli("train", "--data", small, "--out", Path.Combine(_dir, "r")));
    }
}
