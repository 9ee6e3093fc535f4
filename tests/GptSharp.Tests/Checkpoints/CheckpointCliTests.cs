using System.CommandLine;
using GptSharp.Cli;
using GptSharp.Cli.Commands;
using static GptSharp.Tests.Checkpoints.CheckpointTestHelpers;
using GptSharp.Checkpoints;

namespace GptSharp.Tests.Checkpoints;

/// <summary><c>gptsharp convert</c> and <c>inspect</c>, run in-process through their command objects with captured output.</summary>
public class CheckpointCliTests
{
    private static (int Code, string Out) Convert(params string[] args)
    {
        var output = new StringWriter();
        int code = ConvertCommand.Create(output).Parse(args).Invoke();
        return (code, output.ToString());
    }

    private static (int Code, string Out) Inspect(bool plain, params string[] args)
    {
        var output = new StringWriter();
        int code = InspectCommand.Create(output, plain).Parse(args).Invoke();
        return (code, output.ToString());
    }

    [Fact]
    public void CommandsAreRegistered()
    {
        var names = Program.BuildRootCommand().Subcommands.Select(c => c.Name).ToList();
        Assert.Contains("convert", names);
        Assert.Contains("inspect", names);
    }

    [Fact]
    public void ConvertThenInspect()
    {
        using var dir = new TempDir();
        string output = dir.File("model.pth");
        var (code, stdout) = Convert(FixturePaths.Get("reference", "tiny-qkvbias-hf", "model.safetensors"), output);
        Assert.Equal(0, code);
        Assert.Contains("Hugging Face", stdout);
        using (var book = ModelFile.Load(FixturePaths.Get("reference", "tiny-qkvbias", "weights.safetensors")))
        using (var converted = PthModelFile.LoadModel(output, book.Config))
            AssertSameParameters(book, converted);

        foreach (bool plain in new[] { true, false })
        {
            (code, stdout) = Inspect(plain, output);
            // A .pth state dict carries no config: listed in full, with the exit code that says so.
            Assert.Contains("config: unknown", stdout);
            Assert.Equal(InspectCommand.ConfigUnknownExitCode, code);
            Assert.Contains("trf_blocks.2.att.W_value.bias", stdout);
            Assert.Contains("[1000, 48]", stdout);
            Assert.Contains("parameters: 182,064", stdout); // 134,064 + the untied out_head copy (48,000); masks not counted
        }
    }

    [Fact]
    public void ConvertWithConfigAndTo()
    {
        using var dir = new TempDir();
        string config = dir.File("config.json");
        File.WriteAllText(config, """{"vocab_size":64,"context_length":16,"emb_dim":32,"n_heads":4,"n_layers":2,"drop_rate":0.0,"qkv_bias":false}""");
        string output = dir.File("resume.bin");
        var (code, stdout) = Convert(FixturePaths.Get("pth", "model_and_optimizer.pth"), output, "--to", "checkpoint", "--config", config);
        Assert.Equal(0, code);
        Assert.Contains("29,888 parameters", stdout);
        var (model, optimizer, state) = TrainingCheckpointFile.Load(output);
        using (model)
        using (optimizer)
        {
            Assert.Equal(2, optimizer.StepCount);
            Assert.Equal("{}", state[TrainingCheckpointFile.TrainerStateKey]);
        }
        (code, stdout) = Inspect(true, output);
        Assert.Contains("training checkpoint", stdout);
        Assert.Contains("\"step\":2", stdout);
    }
}

[CollectionDefinition(nameof(ConsoleErrorCollection), DisableParallelization = true)]
public sealed class ConsoleErrorCollection;

/// <summary>Errors go to Console.Error through CliErrors, so these tests swap it and run alone.</summary>
[Collection(nameof(ConsoleErrorCollection))]
public class CheckpointCliErrorTests
{
    [Fact]
    public void ErrorsAreOneLineOnStderr()
    {
        using var dir = new TempDir();
        var oldError = Console.Error;
        var error = new StringWriter();
        Console.SetError(error);
        try
        {
            Assert.Equal(1, ConvertCommand.Create(new StringWriter()).Parse([FixturePaths.Get("pth", "model.pth"), dir.File("x.safetensors")]).Invoke());
            Assert.Equal(1, InspectCommand.Create(new StringWriter(), true).Parse([dir.File("missing.pth")]).Invoke());
            Assert.Equal(1, ConvertCommand.Create(new StringWriter()).Parse([FixturePaths.Get("pth", "model.pth"), dir.File("x.onnx")]).Invoke());
        }
        finally
        {
            Console.SetError(oldError);
        }
        var lines = error.ToString().Trim().Split('\n');
        Assert.Equal(3, lines.Length);
        Assert.All(lines, l => Assert.StartsWith("error: ", l));
        Assert.Contains("n_heads", lines[0]);
        Assert.Contains("no such file", lines[1]);
        Assert.Contains("--to", lines[2]);
        Assert.False(File.Exists(dir.File("x.safetensors")));
    }
}
