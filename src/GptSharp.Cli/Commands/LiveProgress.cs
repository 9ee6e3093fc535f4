using Spectre.Console;

namespace GptSharp.Cli.Commands;

/// <summary>The one-line progress bar of long commands on a terminal (<c>train</c>, <c>eval --task</c>): description, bar, percentage,
/// elapsed and remaining time, cleared when done.</summary>
internal static class LiveProgress
{
    public static void Run(Action<ProgressContext> body) =>
        AnsiConsole.Progress()
            .AutoClear(true)
            .HideCompleted(true)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(body);
}
