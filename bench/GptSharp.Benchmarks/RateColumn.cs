using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace GptSharp.Benchmarks;

/// <summary>
/// A column "work / mean time" next to BenchmarkDotNet's times: GFLOP/s for compute benchmarks, GB/s for
/// bandwidth. The work of one invocation comes from the benchmark's parameters (see <see cref="IWorkMeasure"/>).
/// </summary>
public sealed class RateColumn : IColumn
{
    private readonly string _unit;
    public RateColumn(string unit) => _unit = unit;

    public string Id => "Rate" + _unit;
    public string ColumnName => _unit;
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => $"{_unit}: work of one invocation divided by the mean time";
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var stats = summary[benchmarkCase]?.ResultStatistics;
        if (stats == null) return "NA";
        var instance = (IWorkMeasure)Activator.CreateInstance(benchmarkCase.Descriptor.Type)!;
        foreach (var parameter in benchmarkCase.Parameters.Items)
            benchmarkCase.Descriptor.Type.GetProperty(parameter.Name)?.SetValue(instance, parameter.Value);
        double work = instance.WorkPerInvocation(benchmarkCase.Descriptor.WorkloadMethod.Name);
        return (work / stats.Mean).ToString("F1"); // units per nanosecond = G-units per second
    }
}

/// <summary>Implemented by benchmarks that report a rate: FLOPs or bytes of one invocation of a method.</summary>
public interface IWorkMeasure
{
    double WorkPerInvocation(string methodName);
}

public sealed class GflopsConfig : ManualConfig
{
    public GflopsConfig() => AddColumn(new RateColumn("GFLOP/s"));
}

public sealed class BandwidthConfig : ManualConfig
{
    public BandwidthConfig() => AddColumn(new RateColumn("GB/s"));
}
