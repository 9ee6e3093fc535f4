using System.CommandLine;
using Spectre.Console;
using GptSharp.Checkpoints;
using GptSharp.Formats;

namespace GptSharp.Cli.Commands;

/// <summary>
/// <c>gptsharp inspect FILE</c>: tensor names, shapes and dtypes, parameter count and config of a model file.
/// Exit code 0 when the config is known, <see cref="ConfigUnknownExitCode"/> when everything was listed but the config
/// could not be determined (a script can tell a loadable model from a bag of tensors), 1 when the file cannot be read.
/// </summary>
internal static class InspectCommand
{
    public const int ConfigUnknownExitCode = 2;

    /// <param name="output">Where the listing goes (Console.Out by default); <paramref name="plain"/> forces tab-separated lines.</param>
    public static Command Create(TextWriter? output = null, bool? plain = null)
    {
        var file = new Argument<string>("file") { Description = "A .safetensors, .pth or .gguf file, a training checkpoint or a run directory." };
        var command = new Command("inspect", "List the tensors, parameter count and config of a model file (reads headers only).");
        command.Arguments.Add(file);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var info = ModelFileInfo.Read(parse.GetValue(file)!);
            var writer = output ?? Console.Out;
            if (plain ?? Console.IsOutputRedirected) WritePlain(info, writer);
            else WriteTable(info, writer);
            return info.ConfigNote is not null ? ConfigUnknownExitCode : 0;
        }));
        return command;
    }

    private static void WritePlain(ModelFileInfo info, TextWriter writer)
    {
        writer.WriteLine($"file: {Printable.Escape(info.Path)}");
        writer.WriteLine($"format: {info.Format}");
        foreach (var t in info.Tensors) writer.WriteLine($"{Printable.Escape(t.Name)}\t{t.TypeName}\t{t.ShapeString}\t{t.ElementCount}");
        WriteSummary(info, writer.WriteLine);
    }

    private static void WriteTable(ModelFileInfo info, TextWriter writer)
    {
        var table = new Table().Title(Markup.Escape(Printable.Escape(info.Path))).AddColumn("tensor").AddColumn("dtype").AddColumn("shape").AddColumn(new TableColumn("elements").RightAligned());
        foreach (var t in info.Tensors)
            table.AddRow(Markup.Escape(Printable.Escape(t.Name)), Markup.Escape(t.TypeName), Markup.Escape(t.ShapeString), t.ElementCount.ToString("N0"));
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(writer) });
        console.Write(table);
        console.MarkupLine($"[bold]format:[/] {Markup.Escape(info.Format)}");
        WriteSummary(info, line => console.WriteLine(line));
    }

    private static void WriteSummary(ModelFileInfo info, Action<string> write)
    {
        write($"tensors: {info.Tensors.Count}");
        write($"parameters: {info.ParameterCount:N0}");
        if (info.Config is not null) write($"config: {info.Config.ToJson()}");
        if (info.ConfigNote is not null) write($"config: unknown ({Printable.Escape(info.ConfigNote)})");
        foreach (var (key, value) in info.Metadata)
            if (key != ModelFile.ConfigKey && !ReferenceEquals(value, info.OptimizerSummary)) // the optimizer is shown below
                write($"metadata {Printable.Escape(key)}: {Printable.Escape(Shorten(value))}");
        if (info.OptimizerSummary is not null) write($"optimizer: {Printable.Escape(info.OptimizerSummary)}");
    }

    /// <summary>Long metadata (a trainer state with its metrics history) is cut to one readable line.</summary>
    private static string Shorten(string value)
    {
        const int max = 300;
        string line = value.ReplaceLineEndings(" ");
        return line.Length <= max ? line : $"{line[..max]}… ({value.Length:N0} characters)";
    }
}
