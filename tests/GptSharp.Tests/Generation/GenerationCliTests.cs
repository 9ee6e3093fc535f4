using System.CommandLine;
using GptSharp.Cli;
using GptSharp.Cli.Commands;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;
using GptSharp.Checkpoints;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Tests.Generation;

/// <summary>A small random model with GPT-2's vocabulary saved to a temporary model file, shared by the CLI tests.</summary>
public sealed class TinyGpt2File : IDisposable
{
    public TinyGpt2File()
    {
        Directory.CreateDirectory(DirectoryPath);
        using var model = new GptModel(Config, new FastRandom(11));
        model.Save(Path);
    }

    public static GptConfig Config { get; } = new() { VocabSize = 50257, ContextLength = 16, EmbeddingDim = 16, Heads = 2, Layers = 1, DropRate = 0f };

    public string DirectoryPath { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"gptsharp-generate-{Guid.NewGuid():N}");

    public string Path => System.IO.Path.Combine(DirectoryPath, "model.safetensors");

    public void Dispose()
    {
        try { Directory.Delete(DirectoryPath, recursive: true); } catch (IOException) { }
    }
}

public class GenerationCliTests(TinyGpt2File model) : IClassFixture<TinyGpt2File>
{
    private static (int ExitCode, string Output, string Error) Generate(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int exitCode = GenerateCommand.Create(output, error).Parse(args).Invoke();
        return (exitCode, output.ToString(), error.ToString());
    }

    [Fact]
    public void CommandsAreRegistered()
    {
        var names = Program.BuildRootCommand().Subcommands.Select(c => c.Name).ToList();
        Assert.Contains("generate", names);
        Assert.Contains("repl", names);
        Assert.Contains("sample-stats", names);
    }

    [Fact]
    public void GreedyGenerationPrintsThePromptAndTheDecodedContinuation()
    {
        var tokenizer = Gpt2Tokenizer.Instance;
        const string prompt = "Every effort moves you";
        using var loaded = ModelFile.Load(model.Path);
        var expected = TextGeneration.GenerateTextSimple(loaded, TokenBatch.FromSequence(tokenizer.Encode(prompt)), 20, 16);

        // Run directory or file: the same model. 4 prompt tokens + 20 new ones slide past the context of 16.
        foreach (string spec in new[] { model.Path, model.DirectoryPath })
        {
            var (exitCode, output, error) = Generate("--model", spec, "--prompt", prompt, "--max-new-tokens", "20");
            Assert.Equal("", error);
            Assert.Equal(0, exitCode);
            Assert.Equal(tokenizer.Decode(expected.Ids) + Environment.NewLine, output);
        }
    }

    [Fact]
    public void SamplingMatchesTheBooksGenerateWithTheSameSeedWithAndWithoutCache()
    {
        var tokenizer = Gpt2Tokenizer.Instance;
        using var loaded = ModelFile.Load(model.Path);
        var expected = TextGeneration.Generate(loaded, TokenBatch.FromSequence(tokenizer.Encode("Hello")), 12, 16,
            temperature: 1.4f, topK: 25, generator: new TorchGenerator(123));
        string text = tokenizer.Decode(expected.Ids) + Environment.NewLine;
        string[] args = ["--model", model.Path, "--prompt", "Hello", "-n", "12", "--temperature", "1.4", "--top-k", "25", "--seed", "123"];
        Assert.Equal((0, text, ""), Generate(args));
        Assert.Equal((0, text, ""), Generate([.. args, "--no-cache"]));
    }

    [Fact]
    public void StatsGoToStderr()
    {
        var (exitCode, _, error) = Generate("--model", model.Path, "-n", "3", "--stats", "--top-p", "0.9", "--min-p", "0.05",
            "--repetition-penalty", "1.3", "--frequency-penalty", "0.2", "--presence-penalty", "0.1", "--temperature", "0.8");
        Assert.Equal(0, exitCode);
        Assert.Contains("3 new tokens", error);
    }

    [Fact]
    public void BeamSearchRuns()
    {
        var (exitCode, output, error) = Generate("--model", model.Path, "-n", "5", "--num-beams", "3", "--length-penalty", "0.8");
        Assert.Equal("", error);
        Assert.Equal(0, exitCode);
        Assert.StartsWith(GenerateCommand.DefaultPrompt, output);
    }

    [Theory]
    [InlineData("--temperature must be a finite number ≥ 0, got -0.5", "--temperature", "-0.5")]
    [InlineData("--top-k must be at least 1, got 0", "--top-k", "0")]
    [InlineData("--top-p must be in (0, 1], got 0", "--top-p", "0")]
    [InlineData("--top-p must be in (0, 1], got 1.5", "--top-p", "1.5")]
    [InlineData("--prompt is empty", "--prompt", "")]
    [InlineData("--prompt has 19 tokens, more than the context length 16 (--no-slide)", "--no-slide", "--prompt", "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen")]
    [InlineData("--num-beams > 1 is deterministic beam search", "--num-beams", "2", "--temperature", "1")]
    [InlineData("--rng must be \"torch\" or \"fast\"", "--rng", "mt")]
    public void BadOptionsAreOneLineErrors(string message, params string[] args)
    {
        var (exitCode, output, error) = Generate(["--model", model.Path, .. args]);
        Assert.Equal(1, exitCode);
        Assert.Equal("", output);
        Assert.StartsWith("error: " + message, error);
        Assert.Single(error.TrimEnd().Split('\n'));
    }

    [Fact]
    public void TheModelComesFromExactlyOneOfModelAndModelDir()
    {
        var (exitCode, _, error) = Generate("--prompt", "Hi");
        Assert.Equal(1, exitCode);
        Assert.StartsWith("error: give the model with exactly one of --model or --model-dir", error);
        var (ok, output, _) = Generate("--model-dir", model.DirectoryPath, "-n", "2");
        Assert.Equal(0, ok);
        Assert.StartsWith(GenerateCommand.DefaultPrompt, output);
    }

    [Fact]
    public void AMissingModelIsAOneLineError()
    {
        var (exitCode, _, error) = Generate("--model", System.IO.Path.Combine(model.DirectoryPath, "nope.safetensors"));
        Assert.Equal(1, exitCode);
        Assert.Contains("no such file or directory", error);
    }

    [Fact]
    public void ReplContinuesEveryPipedLineWithTheModelLoadedOnce()
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var input = new StringReader("Every effort moves you\n\nHello world\n/exit\nnever read\n");
        int exitCode = ReplCommand.Create(output, input, error).Parse(["--model", model.Path, "-n", "5"]).Invoke();
        Assert.Equal("", error.ToString());
        Assert.Equal(0, exitCode);
        var lines = output.ToString().Split(Environment.NewLine, StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.StartsWith("Every effort moves you", lines[0]);
        Assert.StartsWith("Hello world", lines[1]);
    }

    [Fact]
    public void SampleStatsPrintsTheBooksCountsAndTheExactProbabilities()
    {
        var output = new StringWriter();
        Assert.Equal(0, SampleStatsCommand.Create(output).Parse([]).Invoke());
        string text = output.ToString();
        Assert.Contains("Temperature 1: 1,000 draws", text);
        Assert.Contains("73 x closer", text);
        Assert.Contains("582 x forward", text);
        Assert.Contains("343 x toward", text);
        Assert.Contains("0.572120", text); // P(forward) at T = 1
        Assert.Contains("Temperature 0.1", text);
        Assert.Contains("Temperature 5", text);

        var custom = new StringWriter();
        Assert.Equal(0, SampleStatsCommand.Create(custom).Parse(["--temperatures", "2", "--draws", "50"]).Invoke());
        Assert.Contains("Temperature 2: 50 draws", custom.ToString());
    }
}

public class ReplErrorTests(TinyGpt2File model) : IClassFixture<TinyGpt2File>
{
    [Fact]
    public void ABadLineIsReportedAndTheLoopGoesOn()
    {
        var output = new StringWriter();
        var error = new StringWriter();
        // 20 tokens > context 16 with --no-slide: that line fails, the next one still runs.
        var input = new StringReader("a b c d e f g h i j k l m n o p q r s t\nHello\n");
        int exitCode = ReplCommand.Create(output, input, error).Parse(["--model", model.Path, "-n", "2", "--no-slide"]).Invoke();
        Assert.Equal(0, exitCode);
        Assert.StartsWith("error: --prompt has 20 tokens, more than the context length 16", error.ToString());
        Assert.StartsWith("Hello", output.ToString());
    }
}
