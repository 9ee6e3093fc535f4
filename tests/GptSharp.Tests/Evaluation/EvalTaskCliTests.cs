using System.Text.Json;
using GptSharp.Cli.Commands;

namespace GptSharp.Tests.Evaluation;

/// <summary><c>gptsharp eval --task hellaswag|lambada FILE</c> in-process, with its output and progress lines captured.</summary>
public class EvalTaskCliTests
{
    private static readonly string Model = FixturePaths.Get("reference", "tiny-qkvbias", "weights.safetensors");
    private static readonly JsonElement Golden = JsonDocument.Parse(File.ReadAllText(FixturePaths.Get("evaluation", "golden.json"))).RootElement
        .GetProperty("models").GetProperty("tiny-qkvbias");

    private static (int Code, string Out, string Progress, string Error) Eval(params string[] args)
    {
        var output = new StringWriter();
        var stderr = new StringWriter();
        var parse = EvalCommand.Create(output, stderr).Parse(args);
        if (parse.Errors.Count > 0) return (1, "", "", string.Join("\n", parse.Errors.Select(e => e.Message)));
        int code = parse.Invoke();
        // Progress lines and the error line share stderr: an error is the line that starts with "error: ".
        var lines = stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        return (code, output.ToString(), string.Join("\n", lines.Where(l => !l.StartsWith("error: "))), string.Join("\n", lines.Where(l => l.StartsWith("error: "))));
    }

    private static string TaskFile(string task) => FixturePaths.Get("evaluation", $"{task}-mini.jsonl");

    [Fact]
    public void HellaSwagJsonHasTheHarnessKeysAndThePyTorchAccuracies()
    {
        var (code, stdout, progress, _) = Eval("--model", Model, "--task", "hellaswag", TaskFile("hellaswag"), "--json");
        Assert.Equal(0, code);
        var results = JsonDocument.Parse(stdout).RootElement;
        var metrics = results.GetProperty("results").GetProperty("hellaswag");
        Assert.Equal(["acc", "acc_stderr", "acc_norm", "acc_norm_stderr"], metrics.EnumerateObject().Select(p => p.Name));
        Assert.Equal(Golden.GetProperty("hellaswag").GetProperty("acc").GetDouble(), metrics.GetProperty("acc").GetDouble(), 12);
        Assert.Equal(Golden.GetProperty("hellaswag").GetProperty("acc_norm").GetDouble(), metrics.GetProperty("acc_norm").GetDouble(), 12);
        Assert.Equal(12, results.GetProperty("n-samples").GetProperty("hellaswag").GetProperty("effective").GetInt32());
        // Piped: plain progress lines, ending at 100 %, on the progress writer (stderr), never mixed into the JSON.
        Assert.Contains("hellaswag: 12/12 examples (100%)", progress);
    }

    [Fact]
    public void LambadaWithALimitScoresTheFirstExamplesOnly()
    {
        var (code, stdout, _, _) = Eval("--model", Model, "--task", "lambada", TaskFile("lambada"), "--limit", "14", "--json", "--batch-size", "4");
        Assert.Equal(0, code);
        var examples = Golden.GetProperty("lambada").GetProperty("examples").EnumerateArray().Take(14).ToList();
        var metrics = JsonDocument.Parse(stdout).RootElement.GetProperty("results").GetProperty("lambada");
        Assert.Equal(["acc", "acc_stderr", "perplexity"], metrics.EnumerateObject().Select(p => p.Name));
        Assert.Equal(examples.Count(e => e.GetProperty("greedy").GetBoolean()) / 14.0, metrics.GetProperty("acc").GetDouble(), 12);
        double perplexity = Math.Exp(examples.Average(e => e.GetProperty("loss").GetDouble()));
        Assert.True(Math.Abs(perplexity / metrics.GetProperty("perplexity").GetDouble() - 1) < 1e-5);
    }

    [Fact]
    public void TheTextSummaryNamesTheTaskAndItsMetrics()
    {
        var (code, stdout, _, _) = Eval("--model", Model, "--task", "hellaswag", TaskFile("hellaswag"), "--limit", "2");
        Assert.Equal(0, code);
        Assert.StartsWith("hellaswag: 2 examples, acc ", stdout);
        Assert.Contains("acc_norm", stdout);
    }

    [Theory]
    [InlineData("{\"ctx\": \"The man\", \"endings\": [\"a\", \"b\"]}", "line 1: no \"label\"")]
    [InlineData("{\"ctx\": \"The man\", \"endings\": [\"a\", \"b\"], \"label\": 2}", "line 1: \"label\" must be an ending's index, 0 to 1, got 2")]
    [InlineData("\n{\"ctx\": \"The man\", \"endings\": \"a\", \"label\": 0}", "line 2: expected \"endings\"")]
    [InlineData("{\"ctx\": 3, \"endings\": [\"a\", \"b\"], \"label\": 0}", "line 1: expected a string field \"ctx\"")]
    [InlineData("[1, 2]", "line 1: expected a JSON object")]
    [InlineData("{\"ctx\": \"The", "line 1: not valid JSON")]
    [InlineData("", "no examples")]
    [InlineData("{\"ctx\": \"The man\", \"endings\": [\"is\", \"was\"], \"label\": 0}\n{\"ctx\": \"\", \"endings\": [\"is\", \"was\"], \"label\": 0}", "line 2: the context is empty")]
    [InlineData("{\"ctx\": \"The cat\", \"endings\": [\"is\", \"was\"], \"label\": 0}", "token id 3797 is outside the model's vocabulary (0..999)")]
    public void ABadHellaSwagFileIsOneLineNamingFileAndLine(string contents, string expected)
    {
        string path = Path.Combine(Path.GetTempPath(), $"gptsharp-hs-{Guid.NewGuid():N}.jsonl");
        File.WriteAllText(path, contents);
        try
        {
            var (code, stdout, _, error) = Eval("--model", Model, "--task", "hellaswag", path);
            Assert.Equal(1, code);
            Assert.Equal("", stdout);
            Assert.StartsWith($"error: {path}", error);
            Assert.Contains(expected, error);
            Assert.Single(error.TrimEnd().Split('\n'));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("{\"text\": \"word\"}", "line 1: the text needs a context, a space and a last word")]
    [InlineData("{\"text\": \"ends with a space \"}", "line 1: the text needs a context")]
    [InlineData("{\"passage\": \"a b\"}", "line 1: expected a string field \"text\"")]
    public void ABadLambadaFileIsOneLineNamingFileAndLine(string contents, string expected)
    {
        string path = Path.Combine(Path.GetTempPath(), $"gptsharp-lambada-{Guid.NewGuid():N}.jsonl");
        File.WriteAllText(path, contents);
        try
        {
            var (code, _, _, error) = Eval("--model", Model, "--task", "lambada", path);
            Assert.Equal(1, code);
            Assert.Contains(expected, error);
            Assert.Single(error.TrimEnd().Split('\n'));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData(new[] { "--task", "hellaswag" }, "needs the task's file")]
    [InlineData(new[] { "--task", "hellaswag", "missing.jsonl" }, "missing.jsonl: no such task file")]
    [InlineData(new[] { "--task", "winogrande", "x.jsonl" }, "winogrande")]
    [InlineData(new[] { "--task", "hellaswag", "x.jsonl", "--data", "y.txt" }, "--data is for the loss evaluation")]
    [InlineData(new[] { "--task", "lambada", "x.jsonl", "--limit", "0" }, "--limit must be at least 1")]
    [InlineData(new[] { "--limit", "3" }, "--limit goes with --task")]
    [InlineData(new[] { "stray.jsonl" }, "a task file goes with --task")]
    public void BadOptionsAreOneClearLine(string[] args, string expected)
    {
        var (code, _, _, error) = Eval([.. args, "--model", Model]);
        Assert.Equal(1, code);
        Assert.Contains(expected, error);
    }
}
