using GptSharp.Cli;

namespace GptSharp.Tests.Serving;

public class ServeCommandTests
{
    [Fact]
    public void ServeIsACommandWithItsOptions()
    {
        var serve = Program.BuildRootCommand().Subcommands.Single(c => c.Name == "serve");
        var options = serve.Options.Select(o => o.Name).ToList();
        foreach (string name in new[] { "--model", "--port", "--host", "--runs", "--api-key", "--max-batch", "--max-queue" })
            Assert.Contains(name, options);
    }

    [Fact]
    public void BadOptionsAreOneLineErrors()
    {
        var error = new StringWriter();
        var previous = Console.Error;
        Console.SetError(error);
        try
        {
            int exit = Program.BuildRootCommand().Parse(["serve", "--model", "/nonexistent/model.safetensors", "--port", "0"]).Invoke();
            Assert.Equal(1, exit);
        }
        finally { Console.SetError(previous); }
        string[] lines = error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
    }
}
