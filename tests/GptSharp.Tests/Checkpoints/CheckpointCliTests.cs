using GptSharp.Checkpoints;
using GptSharp.Cli;
using static GptSharp.Tests.Checkpoints.CheckpointTestHelpers;

namespace GptSharp.Tests.Checkpoints;

[Collection("Console")]
public class CheckpointCliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        var (o, e) = (new StringWriter(), new StringWriter());
        Console.SetOut(o);
        Console.SetError(e);
        try
        {
            int code = Program.BuildRootCommand().Parse(args).Invoke();
            return (code, o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    [Fact]
    public void ConvertThenInspect()
    {
        using var dir = new TempDir();
        string output = dir.File("model.pth");
        var (code, stdout, stderr) = Run("convert", FixturePaths.Get("reference", "tiny-qkvbias-hf", "model.safetensors"), output);
        Assert.True(code == 0, stderr);
        Assert.Contains("Hugging Face", stdout);
        using (var book = ModelCheckpoint.Load(FixturePaths.Get("reference", "tiny-qkvbias", "weights.safetensors")))
        using (var converted = PthCheckpoint.LoadModel(output, book.Config))
            AssertSameParameters(book, converted);

        (code, stdout, stderr) = Run("inspect", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("trf_blocks.2.att.W_value.bias", stdout);
        Assert.Contains("[1000, 48]", stdout);
        Assert.Contains("parameters: 182,064", stdout); // 134,064 + the untied out_head copy (48,000)
    }

    [Fact]
    public void ErrorsAreOneLineOnStderr()
    {
        using var dir = new TempDir();
        var (code, _, stderr) = Run("convert", FixturePaths.Get("pth", "model.pth"), dir.File("x.safetensors"));
        Assert.Equal(1, code);
        Assert.StartsWith("error: ", stderr);
        Assert.Contains("n_heads", stderr);
        Assert.Single(stderr.Trim().Split('\n'));
        (code, _, stderr) = Run("inspect", dir.File("missing.pth"));
        Assert.Equal(1, code);
        Assert.Contains("no such file", stderr);
    }
}
