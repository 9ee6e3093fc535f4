using System.CommandLine;

namespace GptSharp.Cli.Commands;

/// <summary>Every subcommand of <c>gptsharp</c>. Add a line here when adding a command file.</summary>
internal static class CommandCatalog
{
    public static IEnumerable<Command> All()
    {
        yield return TrainCommand.Create();
        yield return TokenizeCommand.Create();
        yield return DetokenizeCommand.Create();
        yield return DownloadCommand.Create();
        yield return GenerateCommand.Create();
        yield return ReplCommand.Create();
        yield return SampleStatsCommand.Create();
        yield return ConvertCommand.Create();
        yield return InspectCommand.Create();
        yield return PrepareCommand.Create();
        yield return EvalCommand.Create();
        yield return ServeCommand.Create();
    }
}
