using System.CommandLine;
using GptSharp.Cli.Commands;

namespace GptSharp.Cli;

/// <summary>The <c>gptsharp</c> command: one subcommand per job, each defined in Commands/.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var root = BuildRootCommand();
        CliErrors.Verbose = args.Contains("--verbose");
        return root.Parse(args).Invoke();
    }

    /// <summary>All subcommands; tests call this to run the CLI in-process.</summary>
    public static RootCommand BuildRootCommand()
    {
        var root = new RootCommand("GptSharp: pretrain, evaluate, save, load and run GPT-2-style models in .NET.");
        foreach (var command in CommandCatalog.All())
            root.Subcommands.Add(command);
        root.Options.Add(new Option<bool>("--verbose") { Description = "On an error, print the stack trace after the error line.", Recursive = true });
        return root;
    }
}
